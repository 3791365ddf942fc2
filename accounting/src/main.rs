//! `accounting [serve | migrate]`

use accounting::{Application, Settings};

const USAGE: &str = "usage: accounting [serve | migrate]";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = popug_telemetry::init("accounting");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = Settings::from_env()?;
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["serve"] => {
            let app = Application::build(settings).await?;
            app.run_until_stopped(popug_grpc::shutdown_signal()).await
        }
        ["migrate"] => {
            accounting::startup::connect_and_migrate(&settings).await?;
            println!("accounting: migrations applied");
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}
