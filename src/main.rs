use clap::Parser;
use reverie::cli::logging::{self, LogFormat};
use reverie::cli::plugin::{self, PluginCli};
use reverie::cli::{self, Cli, Exit};

fn main() -> std::process::ExitCode {
    // Installed as `kubectl-reverie`, the binary is the kubectl plugin:
    // kubectl runs it with the arguments after `kubectl reverie`.
    let as_plugin = std::env::args_os()
        .next()
        .is_some_and(|argv0| plugin::is_plugin_name(&argv0));
    type Run = Box<dyn FnOnce() -> anyhow::Result<()>>;
    let (log, format, run): (String, LogFormat, Run) = if as_plugin {
        let p = PluginCli::parse();
        (
            p.log,
            LogFormat::Text,
            Box::new(move || plugin::run(p.args)),
        )
    } else {
        let c = Cli::parse();
        (c.log.clone(), c.log_format, Box::new(move || cli::run(c)))
    };
    logging::init(&log, format);
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            let code = err.downcast_ref::<Exit>().map_or(1, |e| e.code);
            eprintln!("error: {err:#}");
            std::process::ExitCode::from(code)
        }
    }
}
