//! Every option, argument and subcommand that `--help` shows has a description: a flag listed
//! bare in `--help` leaves the reader to guess (issue 21 found `hyperv events FILES` so).

use clap::CommandFactory;

fn undescribed(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
    for arg in cmd.get_arguments() {
        // --help and --version are clap's own, described by clap
        if arg.is_hide_set() || matches!(arg.get_id().as_str(), "help" | "version") {
            continue;
        }
        if arg.get_help().is_none() && arg.get_long_help().is_none() {
            missing.push(format!("{path} {}", arg.get_id()));
        }
    }
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let sub_path = format!("{path} {}", sub.get_name());
        if sub.get_about().is_none() && sub.get_long_about().is_none() {
            missing.push(format!("{sub_path} (the subcommand)"));
        }
        undescribed(sub, &sub_path, missing);
    }
}

#[test]
fn every_option_in_help_has_a_description() {
    let cmd = crate::cli::Cli::command();
    let mut missing = Vec::new();
    undescribed(&cmd, "macpool", &mut missing);
    assert!(
        missing.is_empty(),
        "no description in --help for:\n  {}",
        missing.join("\n  ")
    );
}
