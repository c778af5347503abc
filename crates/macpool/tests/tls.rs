//! `serve --tls-cert/--tls-key` speaks HTTPS, and the CLI trusts a private CA with --ca-cert.

mod common;

use std::process::Command;

use common::{TOKEN, exe};
use predicates::prelude::*;

#[test]
fn https_with_a_private_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let macpool_spawn::Listening { mut child, url, .. } = macpool_spawn::spawn(
        Command::new(exe())
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path().join("data"))
            .arg("--tls-cert")
            .arg(&cert_path)
            .arg("--tls-key")
            .arg(&key_path)
            .env("MACPOOL_BOOTSTRAP_TOKEN", TOKEN),
    )
    .unwrap();
    assert!(url.starts_with("https://"), "{url}");
    let url = url.replace("127.0.0.1", "localhost");
    let cli = || {
        let mut c = assert_cmd::Command::new(exe());
        c.env("MACPOOL_SERVER", &url).env("MACPOOL_TOKEN", TOKEN);
        c
    };
    cli()
        .args(["--ca-cert"])
        .arg(&cert_path)
        .args(["pool", "list"])
        .assert()
        .success();
    // Without trusting the certificate the client refuses to talk.
    cli()
        .args(["pool", "list"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("cannot reach"));
    let _ = child.kill();
    let _ = child.wait();
}
