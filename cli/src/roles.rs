//! The three service roles as processes: bind, serve metrics, announce, run, report.

use anyhow::Context;
use tokio::net::TcpListener;

use musicrl_config::Config;
use musicrl_telemetry::serve_metrics;

use crate::args::{ActorArgs, LearnerArgs, RewardArgs};
use musicrl_orchestrate::process::{shutdown_signal, write_outcome, write_ready};

/// Binds a server's gRPC address; refuses one other hosts can reach when the server would
/// not authenticate them (`security.allow_insecure` says otherwise).
async fn bind(field: &str, addr: &str, config: &Config) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {field} = {addr:?}"))?;
    config
        .security
        .check_exposure(field, listener.local_addr()?)?;
    Ok(listener)
}

fn metrics(field: &str, addr: &str) -> anyhow::Result<Option<std::net::SocketAddr>> {
    let bound = serve_metrics(addr).with_context(|| format!("{field} = {addr:?}"))?;
    if let Some(a) = bound {
        tracing::info!(addr = %a, "serving Prometheus metrics at /metrics");
    }
    Ok(bound)
}

pub async fn learner(mut config: Config, args: LearnerArgs) -> anyhow::Result<()> {
    args.apply(&mut config);
    config.validate()?;
    let listener = bind("learner.listen", &config.learner.listen, &config).await?;
    let metrics_addr = metrics("learner.metrics_listen", &config.learner.metrics_listen)?;
    write_ready(&args.process, Some(listener.local_addr()?), metrics_addr)?;
    let outcome = musicrl_learner::serve(
        config,
        listener,
        shutdown_signal(args.process.stop_on_stdin_close),
    )
    .await?;
    tracing::info!(
        steps = outcome.steps,
        accepted = outcome.trajectories_accepted,
        dropped_stale = outcome.trajectories_dropped_stale,
        completed = outcome.completed,
        "learner finished"
    );
    write_outcome(&args.process, &outcome)?;
    Ok(())
}

pub async fn actor(mut config: Config, args: ActorArgs) -> anyhow::Result<()> {
    args.apply(&mut config);
    config.validate()?;
    let metrics_addr = metrics("actor.metrics_listen", &config.actor.metrics_listen)?;
    write_ready(&args.process, None, metrics_addr)?;
    let outcome = musicrl_actor::run(
        config,
        args.actor_id(),
        shutdown_signal(args.process.stop_on_stdin_close),
    )
    .await?;
    write_outcome(&args.process, &outcome)?;
    Ok(())
}

pub async fn reward_server(mut config: Config, args: RewardArgs) -> anyhow::Result<()> {
    args.apply(&mut config);
    config.validate()?;
    let listener = bind("reward.listen", &config.reward.listen, &config).await?;
    let metrics_addr = metrics("reward.metrics_listen", &config.reward.metrics_listen)?;
    write_ready(&args.process, Some(listener.local_addr()?), metrics_addr)?;
    musicrl_reward::serve(
        config,
        listener,
        shutdown_signal(args.process.stop_on_stdin_close),
    )
    .await?;
    Ok(())
}
