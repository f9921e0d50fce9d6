//! The `musicrl` command: one binary for every role, so one container image serves them all.
//!
//! This crate parses the command line into the orchestration's typed plans
//! (`musicrl_orchestrate::plan`) and the roles' flags, layers them over the configuration,
//! and hands off: the roles to their library crates (`musicrl-learner`, `musicrl-actor`,
//! `musicrl-reward`, `musicrl-feedback`), everything that runs roles or commands together
//! (`local`, `experiment`, reward training, judging, benches) to `musicrl-orchestrate`.

pub mod args;
pub mod roles;

use args::{Cli, Command};
use musicrl_config::Config;
use musicrl_orchestrate::{
    bench, experiment, feedback, feedback_loop, judging, local, music, musicgen, reward_training,
};

/// Loads the configuration: the file named by `--config` (or the embedded default), then the
/// environment, then `--set`; relative input paths the working directory lacks are found in
/// the installation (`musicrl_config::paths`).
pub fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let file = cli.config.as_deref().map(musicrl_config::paths::resolve);
    let mut config = Config::load_layered(file.as_deref(), std::env::vars(), &cli.set)?;
    config.locate_inputs();
    Ok(config)
}

/// The device key a command computes on: `learner.device` for training, `actor.device` for
/// sampling, `reward.device` for the reward server; none for commands that only orchestrate.
fn device_key(command: &Command) -> Option<&'static str> {
    match command {
        Command::Learner(_)
        | Command::Bench(_)
        | Command::Pretrain(_)
        | Command::TrainReward(_)
        | Command::Preferences(_) => Some("learner.device"),
        Command::Feedback(_) => Some("actor.device"),
        Command::Actor(_) | Command::Generate(_) | Command::Judge(_) | Command::Experiment(_) => {
            Some("actor.device")
        }
        Command::RewardServer(_) | Command::Codec(_) => Some("reward.device"),
        Command::Policy(_) => Some("actor.device"),
        Command::Local(_)
        | Command::Prompts(_)
        | Command::Report(_)
        | Command::Config
        | Command::Security(_) => None,
    }
}

/// Runs the parsed command to completion.
pub fn main_with(cli: Cli) -> anyhow::Result<()> {
    let config = load_config(&cli)?;
    if let Some(key) = device_key(&cli.command) {
        let text = match key {
            "learner.device" => &config.learner.device,
            "actor.device" => &config.actor.device,
            _ => &config.reward.device,
        };
        musicrl_policy::device::select(key, text)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Local(args) => {
            let summary = runtime.block_on(local::run(config, args))?;
            print!("{}", local::human_summary(&summary));
            match summary.interrupted {
                Some(signal) => Err(local::Interrupted(signal).into()),
                None => Ok(()),
            }
        }
        Command::Learner(args) => runtime.block_on(roles::learner(config, args)),
        Command::Actor(args) => runtime.block_on(roles::actor(config, args)),
        Command::RewardServer(args) => runtime.block_on(roles::reward_server(config, args)),
        Command::Bench(args) => {
            let report = bench::run(&config, &args)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Pretrain(args) => {
            let report = music::pretrain(config, &args)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Generate(args) => {
            let index = music::generate(config, &args)?;
            eprintln!("open {} in a browser to listen", index.display());
            Ok(())
        }
        Command::TrainReward(args) => {
            let metrics = reward_training::train_reward(config, &args)?;
            println!("{}", serde_json::to_string_pretty(&metrics)?);
            Ok(())
        }
        Command::Preferences(args) => match args.command {
            args::PreferencesCommand::Simulate(a) => {
                let report = reward_training::simulate(config, &a)?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                Ok(())
            }
            args::PreferencesCommand::Calibrate(a) => {
                let report = reward_training::calibrate(config, &a)?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                Ok(())
            }
            args::PreferencesCommand::Evaluate(a) => {
                let report = reward_training::evaluate(config, &a)?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                Ok(())
            }
            args::PreferencesCommand::Import(a) => {
                let report = runtime.block_on(feedback::import(&config, &a))?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                Ok(())
            }
            args::PreferencesCommand::Export(a) => runtime.block_on(feedback::export(&config, &a)),
            args::PreferencesCommand::Status(a) => {
                let report = runtime.block_on(feedback::status(&config, &a))?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                Ok(())
            }
        },
        Command::Feedback(args) => match &args.command {
            Some(musicrl_orchestrate::plan::FeedbackCommand::Bot(b)) => {
                let report = runtime.block_on(feedback::bot(b))?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                Ok(())
            }
            Some(musicrl_orchestrate::plan::FeedbackCommand::Loop(l)) => {
                let results = feedback_loop::run(config, l, &runtime)?;
                eprintln!(
                    "done in {:.0} s: {}",
                    results.wall_seconds,
                    l.out.join("results.json").display()
                );
                Ok(())
            }
            None => runtime.block_on(feedback::serve(config, &args)),
        },
        Command::Prompts(args) => {
            let report = judging::prompts(&config, &args)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Judge(args) => {
            let (report, agreement) = judging::judge(&config, &args)?;
            print!("{}", report.table());
            if let Some(a) = agreement {
                print!("\n{}", a.table());
            }
            eprintln!("results in {}", args.out.join("results.json").display());
            Ok(())
        }
        Command::Experiment(args) => {
            let results = experiment::run(config, &args, &runtime)?;
            eprintln!(
                "done in {:.0} s: {}",
                results.wall_seconds,
                results.plan.out.join("results.json").display()
            );
            Ok(())
        }
        Command::Report(args) => {
            let page = experiment::report::write(&args.dir)?;
            eprintln!("open {} in a browser", page.display());
            Ok(())
        }
        Command::Policy(args) => music::policy(config, &args.command),
        Command::Codec(args) => match &args.command {
            args::CodecCommand::Decode { codec, codes, out } => musicgen::codec_decode(
                codec,
                codes,
                out,
                &musicrl_policy::device::inference_device(),
            ),
        },
        Command::Security(args) => match &args.command {
            args::SecurityCommand::Init { dir, names } => {
                let w = musicrl_security::pki::init(dir, names)?;
                eprintln!(
                    "wrote a development CA, certificates for {names:?}, tokens for actor, operator and admin, and a reward key in {}",
                    w.dir.display()
                );
                let section = toml::to_string_pretty(&w.config)?;
                println!("[security]\n{section}");
                Ok(())
            }
        },
        Command::Config => {
            config.validate()?;
            print!("{}", config.to_toml());
            Ok(())
        }
    }
}
