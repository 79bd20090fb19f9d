//! The worker threads that run trials. Only the scheduler starts threads that run trials.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use crate::runners::{Control, RunnerEvent, TrialJob, TrialRunner};

/// What a worker is given: one trial to run (or follow), or trials to deploy in one call.
pub(super) enum Work {
    One(TrialJob, Receiver<Control>),
    Batch(Vec<TrialJob>),
}

/// The worker threads. Only the scheduler starts threads that run trials.
pub(super) struct Pool {
    pub(super) jobs: Receiver<Work>,
    pub(super) events: Sender<RunnerEvent>,
    pub(super) runner: Arc<dyn TrialRunner>,
    pub(super) workers: Vec<std::thread::JoinHandle<()>>,
}

impl Pool {
    /// Start workers until there are `n`.
    pub(super) fn grow_to(&mut self, n: usize) -> Result<(), String> {
        while self.workers.len() < n {
            let (jobs, events, runner) = (self.jobs.clone(), self.events.clone(), Arc::clone(&self.runner));
            let h = std::thread::Builder::new()
                .name(format!("optx-worker-{}", self.workers.len()))
                .spawn(move || {
                    for work in jobs {
                        match work {
                            Work::One(job, control) => runner.execute(job, &control, &events),
                            Work::Batch(batch) => runner.deploy_batch(batch, &events),
                        }
                    }
                })
                .map_err(|e| format!("cannot start a worker thread: {e}"))?;
            self.workers.push(h);
        }
        Ok(())
    }
}
