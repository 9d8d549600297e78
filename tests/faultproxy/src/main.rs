//! `faultproxy --upstream HOST:PORT [--listen ADDR] [--latency 20ms] [--slowdown P]
//! [--rate-limit N] [--error P] [--reset P] [--truncate P] [--corrupt P]`: runs the proxy until
//! interrupted and prints the address it listens on, then the counts of what it did when it
//! stops. P is a share of requests between 0 and 1; N requests per second.

use std::net::SocketAddr;
use std::process::ExitCode;

use faultproxy::{Faults, Proxy};

fn parse(args: &[String]) -> Result<(SocketAddr, SocketAddr, Faults), String> {
    let mut listen: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let mut upstream = None;
    let mut faults = Faults::default();
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let share = || -> Result<f64, String> {
            value
                .parse::<f64>()
                .ok()
                .filter(|p| (0.0..=1.0).contains(p))
                .ok_or_else(|| format!("{flag}: {value:?} is not a share between 0 and 1"))
        };
        let addr = || -> Result<SocketAddr, String> {
            value
                .parse()
                .map_err(|_| format!("{flag}: {value:?} is not HOST:PORT"))
        };
        match flag.as_str() {
            "--listen" => listen = addr()?,
            "--upstream" => upstream = Some(addr()?),
            "--latency" => {
                faults.latency = humantime::parse_duration(value)
                    .map_err(|e| format!("--latency: {value:?}: {e}"))?
            }
            "--slowdown" => faults.slowdown = share()?,
            "--rate-limit" => {
                faults.rate_limit = Some(
                    value
                        .parse::<f64>()
                        .ok()
                        .filter(|n| *n > 0.0 && n.is_finite())
                        .ok_or_else(|| {
                            format!(
                                "--rate-limit: {value:?} is not a number of requests per second"
                            )
                        })?,
                )
            }
            "--error" => faults.error = share()?,
            "--reset" => faults.reset = share()?,
            "--truncate" => faults.truncate = share()?,
            "--corrupt" => faults.corrupt = share()?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    let upstream = upstream.ok_or("--upstream HOST:PORT is required")?;
    Ok((listen, upstream, faults))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (listen, upstream, faults) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("faultproxy: {message}");
            return ExitCode::from(2);
        }
    };
    let proxy = match Proxy::start_on(listen, upstream, faults).await {
        Ok(proxy) => proxy,
        Err(err) => {
            eprintln!("faultproxy: listen on {listen}: {err}");
            return ExitCode::from(1);
        }
    };
    println!("{}", proxy.addr);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let c = &proxy.counters;
    eprintln!(
        "faultproxy: {} requests, {} slowdowns, {} errors, {} resets, {} truncations, {} rate-limited",
        Proxy::count(&c.requests),
        Proxy::count(&c.slowdowns),
        Proxy::count(&c.errors),
        Proxy::count(&c.resets),
        Proxy::count(&c.truncations),
        Proxy::count(&c.rate_limited)
    );
    ExitCode::SUCCESS
}
