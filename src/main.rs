use clap::Parser;
use simple_api::cli::{self, Cli};
use simple_api::telemetry;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            // One line naming the flag and variable, not clap's multi-line usage dump.
            eprintln!(
                "{}",
                e.render()
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or("invalid arguments")
            );
            return std::process::ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    telemetry::init(&cli.config.log_format);
    match cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
