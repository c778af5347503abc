use macpool_api::dto::TokenCreate;

use super::Ctx;
use crate::cli::TokenCommand;
use crate::exit::{CmdResult, OK};
use crate::output::{opt, table};

pub async fn run(ctx: &Ctx, cmd: TokenCommand) -> CmdResult {
    match cmd {
        TokenCommand::Create { role, host, name } => {
            let name = name.unwrap_or_else(|| match &host {
                Some(h) => format!("{role}-{h}"),
                None => role.clone(),
            });
            let t = ctx
                .client
                .create_token(&TokenCreate { name, role, host })
                .await?;
            if ctx.out.json {
                ctx.out.print_json(&t);
            } else {
                println!(
                    "created {} token '{}' (id {}); it is shown only this once:\n\n    {}\n",
                    t.info.role, t.info.name, t.info.id, t.token
                );
            }
        }
        TokenCommand::List => {
            let tokens = ctx.client.tokens().await?;
            if ctx.out.json {
                ctx.out.print_json(&tokens);
            } else {
                let rows: Vec<Vec<String>> = tokens
                    .iter()
                    .map(|t| {
                        vec![
                            t.id.clone(),
                            t.name.clone(),
                            t.role.clone(),
                            opt(&t.host),
                            t.created.clone(),
                            opt(&t.revoked),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(&["ID", "NAME", "ROLE", "HOST", "CREATED", "REVOKED"], &rows)
                );
            }
        }
        TokenCommand::Revoke { id } => {
            let t = ctx.client.revoke_token(&id).await?;
            if ctx.out.json {
                ctx.out.print_json(&t);
            } else {
                println!("revoked token {} ('{}')", t.id, t.name);
            }
        }
    }
    Ok(OK)
}
