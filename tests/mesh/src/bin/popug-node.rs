//! `popug-node <account | taskkeeper | accounting | gateway> [command …]`: any service's
//! binary in one (each service's `main` is the same one call), so the integration tests
//! can run services as separate processes — with their own telemetry, as in production —
//! from a binary cargo builds for them (`CARGO_BIN_EXE_popug-node`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let service = args.next().unwrap_or_default();
    let args: Vec<String> = args.collect();
    match service.as_str() {
        "account" => popug_service::main_with::<account::Application>(args).await,
        "taskkeeper" => popug_service::main_with::<taskkeeper::Application>(args).await,
        "accounting" => popug_service::main_with::<accounting::Application>(args).await,
        "gateway" => popug_service::main_with::<gateway::Application>(args).await,
        _ => {
            eprintln!(
                "usage: popug-node <account | taskkeeper | accounting | gateway> [command …]"
            );
            std::process::exit(2);
        }
    }
}
