//! Progress on long work: a bar on a terminal; elsewhere (a pipe, a Kubernetes Job's log) a
//! plain line each tenth of the way, so that a twelve-minute training run is never silent.

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    unit: &'static str,
    len: u64,
    pos: u64,
    next_line: u64,
    message: String,
    started: Instant,
}

impl Progress {
    /// `label` heads each line ("epoch 2", "sampling pairs"); `unit` names what is counted.
    pub fn new(label: impl Into<String>, len: u64, unit: &'static str) -> Self {
        let label = label.into();
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(len);
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "{{prefix}} [{{bar:30}}] {{pos}}/{{len}} {unit} {{msg}} ({{eta}})"
                ))
                .expect("a valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(label.clone());
            bar
        });
        Self {
            bar,
            label,
            unit,
            len,
            pos: 0,
            next_line: Self::step(len),
            message: String::new(),
            started: Instant::now(),
        }
    }

    fn step(len: u64) -> u64 {
        len.div_ceil(10).max(1)
    }

    /// Shown after the counts ("loss 0.693").
    pub fn set_message(&mut self, message: String) {
        if let Some(b) = &self.bar {
            b.set_message(message.clone());
        }
        self.message = message;
    }

    pub fn inc(&mut self, n: u64) {
        self.pos += n;
        if let Some(b) = &self.bar {
            b.inc(n);
        } else if self.pos >= self.next_line || self.pos == self.len {
            while self.next_line <= self.pos {
                self.next_line += Self::step(self.len);
            }
            let elapsed = self.started.elapsed().as_secs_f64();
            let left = elapsed / self.pos as f64 * self.len.saturating_sub(self.pos) as f64;
            let sep = if self.message.is_empty() { "" } else { " " };
            eprintln!(
                "{}: {}/{} {}{sep}{} ({elapsed:.0} s, about {left:.0} s left)",
                self.label, self.pos, self.len, self.unit, self.message
            );
        }
    }

    pub fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}

/// Epoch-by-epoch progress for the training loops (`pretrain`, `train-reward`).
#[derive(Default)]
pub struct EpochBar {
    current: Option<Progress>,
}

impl EpochBar {
    pub fn epoch_started(&mut self, epoch: usize, batches: usize) {
        self.current = Some(Progress::new(
            format!("epoch {epoch}"),
            batches as u64,
            "batches",
        ));
    }

    pub fn batch_done(&mut self, loss: f64) {
        if let Some(p) = &mut self.current {
            p.set_message(format!("loss {loss:.3}"));
            p.inc(1);
        }
    }

    pub fn epoch_done(&mut self) {
        if let Some(p) = self.current.take() {
            p.finish();
        }
    }
}
