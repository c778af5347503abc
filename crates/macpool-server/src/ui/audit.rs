//! Audit in the browser: the files `macpool audit` reads, uploaded, audited with the same code
//! (`macpool_audit::audit_paths`) and shown with the Conflicts page's components. Uploads are
//! streamed to a private temporary directory (never held whole in memory, never twice), limited
//! in size, and deleted with the report: nothing is stored in the authority.

// A page's error is itself a page (a `Response`), as axum handlers return it.
#![allow(clippy::result_large_err)]

use std::io::Write;
use std::sync::Arc;

use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use axum::response::Response;
use macpool_audit::{AuditOptions, FileStatus};

use super::html::{Esc, Html, Section, count, csrf_field};
use super::pages::conflict_card;
use super::{User, csrf_refused, error_page};
use crate::AppState;
use crate::error::ApiError;
use crate::w;

/// Most bytes one audit upload may carry, all files together.
pub const MAX_AUDIT_BYTES: usize = 64 * 1024 * 1024;
/// Most files in one upload.
const MAX_FILES: usize = 200;

pub async fn form(user: User) -> Response {
    let mut h = Html::default();
    intro(&mut h, &user);
    user.page("Audit", Section::Audit, h)
}

fn intro(h: &mut Html, user: &User) {
    w!(
        h,
        "<h1>Audit files</h1><p>Upload Hyper-V exports (the JSON that <code>macpool hyperv export-script</code>'s \
         PowerShell writes, UTF-8 or UTF-16), libvirt domain or snapshot XML, MAC lists or DHCP leases \
         (ISC, dnsmasq, Kea). They are audited exactly as <code>macpool audit</code> audits them and then \
         deleted: nothing is stored. At most {} in all, {MAX_FILES} files.</p>\
         <form method=\"post\" action=\"/audit\" enctype=\"multipart/form-data\">",
        count((MAX_AUDIT_BYTES / 1024 / 1024) as u64) + " MiB"
    );
    csrf_field(h, &user.session.csrf);
    w!(
        h,
        "<label for=\"files\">Files</label><input id=\"files\" name=\"files\" type=\"file\" multiple required>\
         <button type=\"submit\">Audit</button></form>"
    );
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload-too-large",
        format!(
            "the upload is larger than {} MiB; audit bigger sets with `macpool audit` on the command line",
            MAX_AUDIT_BYTES / 1024 / 1024
        ),
    )
}

pub async fn upload(
    State(_st): State<Arc<AppState>>,
    user: User,
    mut multipart: Multipart,
) -> Result<Response, Response> {
    let err = |e: ApiError| error_page(Some(&user), e);
    let dir = tempfile::tempdir().map_err(|e| {
        err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            e.to_string(),
        ))
    })?;
    let mut csrf = None;
    let mut total = 0usize;
    let mut paths = Vec::new();
    while let Some(mut field) = multipart.next_field().await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            err(too_large())
        } else {
            err(ApiError::bad_request("invalid-input", e.body_text()))
        }
    })? {
        match field.name() {
            Some("csrf") => csrf = field.text().await.ok(),
            Some("files") => {
                if paths.len() == MAX_FILES {
                    return Err(err(ApiError::bad_request(
                        "invalid-input",
                        format!("at most {MAX_FILES} files per upload"),
                    )));
                }
                // the browser's file name is shown, never used as a path
                let shown = field
                    .file_name()
                    .map(|n| n.rsplit(['/', '\\']).next().unwrap_or(n).to_string())
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| format!("file {}", paths.len() + 1));
                let path = dir.path().join(format!("{:03}", paths.len()));
                let mut out = std::fs::File::create(&path).map_err(|e| {
                    err(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        e.to_string(),
                    ))
                })?;
                while let Some(chunk) = field
                    .chunk()
                    .await
                    .map_err(|e| err(ApiError::bad_request("invalid-input", e.body_text())))?
                {
                    total += chunk.len();
                    if total > MAX_AUDIT_BYTES {
                        return Err(err(too_large()));
                    }
                    out.write_all(&chunk).map_err(|e| {
                        err(ApiError::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "internal",
                            e.to_string(),
                        ))
                    })?;
                }
                paths.push((path, shown));
            }
            _ => {}
        }
    }
    if !super::session::csrf_matches(&user.session, csrf.as_deref()) {
        return Err(err(csrf_refused()));
    }
    if paths.is_empty() {
        return Err(err(ApiError::bad_request(
            "invalid-input",
            "choose at least one file",
        )));
    }
    let files: Vec<_> = paths.iter().map(|(p, _)| p.clone()).collect();
    let report = tokio::task::spawn_blocking(move || {
        macpool_audit::audit_paths(&files, &AuditOptions::default())
    })
    .await
    .map_err(|e| {
        err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            e.to_string(),
        ))
    })?;
    // show the uploaded names, not the temporary paths
    let name_of = |p: &std::path::Path| {
        paths
            .iter()
            .find(|(q, _)| q == p)
            .map(|(_, n)| n.clone())
            .unwrap_or_else(|| p.display().to_string())
    };
    let rename = |s: &str| {
        let mut s = s.to_string();
        for (p, n) in &paths {
            s = s.replace(&p.display().to_string(), n);
        }
        s
    };
    let mut h = Html::default();
    intro(&mut h, &user);
    let sm = &report.summary;
    w!(
        h,
        "<h2>Report</h2><p>{} read, {} skipped, {} unreadable; {} records ({} bad); <strong>{} conflicts</strong>.</p>\
         <table><caption class=\"sr\">Files</caption><thead><tr><th scope=\"col\">File</th><th scope=\"col\">Format</th><th scope=\"col\">Status</th>\
         <th scope=\"col\">Records</th><th scope=\"col\">Problems</th></tr></thead><tbody>",
        sm.files_read,
        sm.files_skipped,
        sm.files_unreadable,
        count(sm.records),
        count(sm.bad_records),
        sm.conflicts()
    );
    for f in &report.files {
        let status = match &f.status {
            FileStatus::Read => "read".to_string(),
            FileStatus::Skipped(r) => format!("skipped: {r}"),
            FileStatus::Unreadable(r) => format!("unreadable: {r}"),
        };
        let problems: Vec<String> = f
            .diagnostics
            .iter()
            .map(|d| match &d.location {
                Some(l) => rename(&format!("{l}: {}", d.message)),
                None => rename(&d.message),
            })
            .collect();
        w!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            Esc(&name_of(&f.path)),
            f.format.map(|x| x.name()).unwrap_or("—"),
            Esc(&status),
            count(f.records),
            Esc(&problems.join("; "))
        );
    }
    w!(h, "</tbody></table>");
    for c in &report.conflicts {
        let mut c = c.clone();
        if let macpool_core::conflict::Subject::Mac { sightings, .. } = &mut c.subject {
            for s in sightings {
                s.owner.source = rename(&s.owner.source);
            }
        }
        c.explanation = rename(&c.explanation);
        conflict_card(&mut h, &c);
    }
    Ok(user.page("Audit", Section::Audit, h))
}
