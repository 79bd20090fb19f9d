//! The worker threads that run trials, and the loop of a driven runner. Only the scheduler
//! starts threads that run trials.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use crate::runners::{Control, RunnerEvent, Task, TrialJob, TrialRunner};

/// What a worker is given: one trial to run (or follow), trials to deploy in one call, or
/// a task of the runner's driver (reading what an ended job left).
pub(super) enum Work {
    One(TrialJob, Receiver<Control>),
    Batch(Vec<TrialJob>),
    Task(Task),
}

/// The worker threads. Only the scheduler starts threads that run trials.
pub(super) struct Pool {
    pub(super) jobs: Receiver<Work>,
    /// The sending end of `jobs` that a driven runner's loop hands its tasks through. The
    /// driver takes it, and drops it when it ends (and so does `grow_to` for a runner
    /// without a driver), so that the workers end once the dispatcher's end is dropped too.
    pub(super) tasks: Option<Sender<Work>>,
    pub(super) events: Sender<RunnerEvent>,
    pub(super) runner: Arc<dyn TrialRunner>,
    pub(super) workers: Vec<std::thread::JoinHandle<()>>,
    pub(super) driver: Option<std::thread::JoinHandle<()>>,
}

impl Pool {
    /// Start workers until there are `n`, and the runner's driver if it has one.
    pub(super) fn grow_to(&mut self, n: usize) -> Result<(), String> {
        if let Some(tasks) = self.tasks.take().filter(|_| self.runner.driven()) {
            let runner = Arc::clone(&self.runner);
            let h = std::thread::Builder::new()
                .name("optx-driver".into())
                .spawn(move || {
                    runner.drive(&|t| {
                        let _ = tasks.send(Work::Task(t));
                    })
                })
                .map_err(|e| format!("cannot start the runner's driver thread: {e}"))?;
            self.driver = Some(h);
        }
        while self.workers.len() < n {
            let (jobs, events, runner) = (self.jobs.clone(), self.events.clone(), Arc::clone(&self.runner));
            let h = std::thread::Builder::new()
                .name(format!("optx-worker-{}", self.workers.len()))
                .spawn(move || {
                    for work in jobs {
                        match work {
                            Work::One(job, control) => runner.execute(job, &control, &events),
                            Work::Batch(batch) => runner.deploy_batch(batch, &events),
                            Work::Task(task) => task(),
                        }
                    }
                })
                .map_err(|e| format!("cannot start a worker thread: {e}"))?;
            self.workers.push(h);
        }
        Ok(())
    }
}
