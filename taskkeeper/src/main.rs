//! `taskkeeper [serve | migrate]`

use taskkeeper::{Application, Settings};

const USAGE: &str = "usage: taskkeeper [serve | migrate]";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = popug_telemetry::init("taskkeeper");
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
            taskkeeper::startup::connect_and_migrate(&settings).await?;
            println!("taskkeeper: migrations applied");
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}
