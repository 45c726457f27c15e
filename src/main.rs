use clap::Parser;
use simple_api::config::{Cli, Command};
use simple_api::{api, cli, startup::Application, telemetry};

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
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.config).await,
        Command::Users(cmd) => cli::users(cli.config, cmd).await,
        Command::Clients(cmd) => cli::clients(cli.config, cmd).await,
        Command::Keys(cmd) => cli::keys(cli.config, cmd),
        Command::Passwords(cmd) => cli::passwords(&cli.config, cmd),
        Command::Migrate => cli::migrate(&cli.config).await,
        Command::Store(cmd) => cli::store(&cli.config, cmd).await,
        Command::Openapi => {
            print!("{}", api::spec_json());
            Ok(())
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(config: simple_api::config::Config) -> anyhow::Result<()> {
    let shutdown = simple_api::startup::shutdown_signal()?;
    let app = Application::build(config).await?;
    app.run_until(shutdown).await?;
    Ok(())
}
