//! `starcite`: one binary for the node (`serve`), the operator CLI (`ops`), the bundled load
//! generator (`bench`), a local cluster launcher (`dev`) and `version`.

mod bench;
mod cluster;
mod config;
mod control;
mod dev;
mod logging;
mod ops;
mod serve;
mod signals;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code of an invalid configuration (config.md §3, `EX_CONFIG`).
const EXIT_INVALID_CONFIG: u8 = 78;
/// Exit code of a usage error.
const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "starcite",
    about = "Durable, ordered per-session event log",
    disable_version_flag = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node (configuration: environment variables, overridden by flags; see `serve --help`).
    #[command(disable_help_flag = true)]
    Serve {
        /// `--check-config` and `--<flag> <value>` pairs, parsed against config.md.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        arguments: Vec<String>,
    },
    /// Talk to a running node's ops API.
    #[command(disable_help_flag = true)]
    Ops {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        arguments: Vec<String>,
    },
    /// Load generator: durable appends against a running node, or the disk's fsync floor.
    Bench(bench::BenchArgs),
    /// Start a local cluster of N nodes on loopback.
    Dev(dev::DevArgs),
    /// Print the version.
    Version,
}

// Every shard allocates request buffers, JSON values and frames per request; glibc's malloc
// spends measurable time consolidating and re-protecting arenas under that load.
#[global_allocator]
static GLOBAL_ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { arguments } => serve_command(&arguments),
        Command::Ops { arguments } => ops::run(&arguments),
        Command::Dev(arguments) => dev::run(arguments),
        Command::Bench(arguments) => report_failure(bench::run(arguments)),
        Command::Version => {
            println!("starcite {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}

/// Prints a fatal error as one `starcite: <message>` line and exits 1.
fn report_failure(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("starcite: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve_command(arguments: &[String]) -> ExitCode {
    let mut variables = config::environment();
    let options = match config::apply_flags(arguments, &mut variables) {
        Ok(options) => options,
        Err(usage) => {
            eprintln!("starcite: {usage}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if options.help {
        print!("{}", config::help_text());
        return ExitCode::SUCCESS;
    }
    let loaded = match config::load(&variables) {
        Ok(loaded) => loaded,
        Err(invalid) => {
            eprintln!("{invalid}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    if let Err(error) = logging::init(loaded.config.log_level, loaded.config.log_format) {
        eprintln!("starcite: {error:#}");
        return ExitCode::FAILURE;
    }
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    if options.check_config {
        println!("configuration ok");
        return ExitCode::SUCCESS;
    }
    report_failure(serve::run(loaded.config))
}
