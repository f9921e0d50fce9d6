//! The `musicrl` binary: parses the command line and runs the command (`musicrl::Cli`).

use clap::Parser;

fn main() -> std::process::ExitCode {
    musicrl_orchestrate::process::keep_freed_heap();
    musicrl_telemetry::init_tracing();
    let cli = musicrl::args::Cli::parse();
    match musicrl::main_with(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            if let Some(i) = e.downcast_ref::<musicrl_orchestrate::local::Interrupted>() {
                eprintln!("{i}");
                return std::process::ExitCode::from(i.exit_code());
            }
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
