//! `gateway [serve | policy-table]`

use gateway::{Application, Settings};

const USAGE: &str = "usage: gateway [serve | policy-table]";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["serve"] => {
            let _telemetry = popug_telemetry::init("gateway");
            let app = Application::build(Settings::from_env()?).await?;
            app.run_until_stopped(popug_grpc::shutdown_signal()).await
        }
        ["policy-table"] => {
            let table =
                gateway::policy::PolicyTable::from_descriptors(popug_proto::FILE_DESCRIPTOR_SET)?;
            print!("{}", table.markdown());
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}
