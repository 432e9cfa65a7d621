//! Long simulation campaigns: `simulation --scenario NAME --seeds N`.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use simulation::scenarios;

#[derive(Parser)]
#[command(name = "simulation", about = "Run Raftgate cluster simulations over many seeds")]
struct Cli {
    /// Scenario name, or `all`.
    #[arg(long, default_value = "all")]
    scenario: String,
    /// Run this one seed (replays a failure exactly).
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Number of seeds per scenario, starting at --first-seed.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    #[arg(long, default_value_t = 0)]
    first_seed: u64,
    /// Print each run's event history (faults, leaders, failovers).
    #[arg(long)]
    verbose: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let chosen: Vec<_> = if cli.scenario == "all" {
        scenarios::ALL.to_vec()
    } else {
        match scenarios::by_name(&cli.scenario) {
            Some(run) => vec![(cli.scenario.as_str(), run)],
            None => {
                let names: Vec<_> = scenarios::ALL.iter().map(|(n, _)| *n).collect();
                eprintln!("simulation: unknown scenario {:?}; known: {}", cli.scenario, names.join(", "));
                return ExitCode::from(2);
            }
        }
    };
    let seeds: Vec<u64> = match cli.seed {
        Some(s) => vec![s],
        None => (cli.first_seed..cli.first_seed + cli.seeds).collect(),
    };
    let mut failed = 0;
    for (name, run) in chosen {
        let started = Instant::now();
        let mut failovers = Vec::new();
        let mut failures = Vec::new();
        let mut sim_ms = 0;
        let mut inconclusive = 0;
        for &seed in &seeds {
            match run(seed) {
                Ok(report) => {
                    if cli.verbose {
                        println!("{name} seed {seed}: digest {:016x}", report.history_digest);
                        for e in &report.events {
                            println!("  {e}");
                        }
                    }
                    sim_ms += report.sim_ms;
                    inconclusive += report.lin_inconclusive;
                    failovers.extend(report.failovers_ms.iter().map(|(_, ms)| *ms));
                }
                Err(f) => {
                    eprintln!("{f}");
                    failures.push(seed);
                }
            }
        }
        let wall = started.elapsed();
        let per_min = seeds.len() as f64 / wall.as_secs_f64() * 60.0;
        println!(
            "{name}: {} seeds, {} failed, {:.1} s wall, {per_min:.0} seeds/min, {:.0} s simulated",
            seeds.len(),
            failures.len(),
            wall.as_secs_f64(),
            sim_ms as f64 / 1000.0
        );
        if inconclusive > 0 {
            println!(
                "  linearizability search gave up on {inconclusive} register histories (neither proven nor refuted)"
            );
        }
        if !failovers.is_empty() {
            failovers.sort_unstable();
            let q = |p: f64| failovers[((failovers.len() - 1) as f64 * p).round() as usize];
            println!(
                "  failover (simulated ms, fault to a new leader with a committed entry): n={} p50={} p99={} max={}",
                failovers.len(),
                q(0.5),
                q(0.99),
                failovers[failovers.len() - 1]
            );
        }
        if !failures.is_empty() {
            println!("  failing seeds: {failures:?}");
            failed += failures.len();
        }
    }
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
