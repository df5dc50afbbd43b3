//! Every subcommand's `--help` describes each flag and lists the environment
//! variables the command reads.

use crate::Cli;
use clap::CommandFactory;

#[test]
fn every_flag_of_every_subcommand_is_described() {
    let cli = Cli::command();
    let mut missing = Vec::new();
    for global in cli.get_arguments() {
        if global.get_help().is_none() && !matches!(global.get_id().as_str(), "help" | "version") {
            missing.push(format!("warmpool --{}", global.get_id()));
        }
    }
    for sub in cli.get_subcommands() {
        assert!(
            sub.get_about().is_some(),
            "{} has no description",
            sub.get_name()
        );
        for arg in sub.get_arguments() {
            if arg.get_id() == "help" {
                continue;
            }
            if arg
                .get_help()
                .is_none_or(|h| h.to_string().trim().is_empty())
            {
                missing.push(format!("warmpool {} {}", sub.get_name(), arg.get_id()));
            }
        }
        let after = sub
            .get_after_help()
            .map(|h| h.to_string())
            .unwrap_or_default();
        assert!(
            after.starts_with("Environment:") && after.contains("WARMPOOL_LOG"),
            "warmpool {} --help lists no environment variables",
            sub.get_name()
        );
    }
    assert!(
        missing.is_empty(),
        "flags without a description: {missing:?}"
    );
}

#[test]
fn the_engine_commands_name_docker_host_and_the_client_commands_the_server() {
    let cli = Cli::command();
    for sub in cli.get_subcommands() {
        let after = sub
            .get_after_help()
            .map(|h| h.to_string())
            .unwrap_or_default();
        match sub.get_name() {
            "serve" | "run" | "doctor" | "bench" => {
                assert!(after.contains("DOCKER_HOST"), "{}", sub.get_name())
            }
            "submit" | "jobs" | "logs" | "status" => assert!(
                after.contains("WARMPOOL_SERVER") && after.contains("WARMPOOL_API_TOKEN"),
                "{}",
                sub.get_name()
            ),
            _ => {}
        }
    }
}
