use clap::Parser;
use reverie::cli::plugin::{self, PluginCli};
use reverie::cli::{self, Cli, Exit};
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    // Installed as `kubectl-reverie`, the binary is the kubectl plugin:
    // kubectl runs it with the arguments after `kubectl reverie`.
    let as_plugin = std::env::args_os()
        .next()
        .is_some_and(|argv0| plugin::is_plugin_name(&argv0));
    let (log, run): (String, Box<dyn FnOnce() -> anyhow::Result<()>>) = if as_plugin {
        let p = PluginCli::parse();
        (p.log, Box::new(move || plugin::run(p.args)))
    } else {
        let c = Cli::parse();
        (c.log.clone(), Box::new(move || cli::run(c)))
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            let code = err.downcast_ref::<Exit>().map_or(1, |e| e.code);
            eprintln!("error: {err:#}");
            std::process::ExitCode::from(code)
        }
    }
}
