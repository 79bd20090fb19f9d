//! L1: history -> candidates.
//!
//! Initial points first, then (for `auto` and `bayesian`) the center point and scrambled
//! Sobol up to `initial_trials`, then Bayesian optimization ([`bayes`]); or the method's
//! sequence: scrambled Sobol, seeded random or grid. The sequence is a pure function of the
//! seed, the observations, and a few counters and the last model fits ([`GenState`]), which
//! the scheduler stores in the same transaction as the candidate they produced, so a resumed
//! run continues it exactly. Uses only `domain`.

pub mod bayes;

use std::collections::BTreeMap;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::domain::{Arm, ExperimentSpec, GenerationMethod, SearchSpace};

/// Where the sequence stands.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenState {
    pub initial_points_used: usize,
    pub center_done: bool,
    pub sobol_draws: u64,
    pub random_draws: u64,
    pub grid_pos: u64,
    /// Proposals of the initial phase (initial points, center, Sobol) of `auto`/`bayesian`.
    #[serde(default)]
    pub initial_made: u64,
    /// Bayesian proposals so far: each one's random stream is its number.
    #[serde(default)]
    pub bayes_draws: u64,
    /// The hyperparameters of the last fit of each model, where the next fit starts.
    #[serde(default)]
    pub hypers: BTreeMap<String, Vec<f64>>,
}

/// A proposed arm and the name of what proposed it (stored as the trial's generation).
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    pub arm: Arm,
    pub method: &'static str,
}

/// Why no candidate came.
#[derive(Debug, Clone, PartialEq)]
pub enum Exhausted {
    /// Every arm of a finite space has been deployed.
    Space { arms: u64 },
    /// Grid points are all used.
    Grid { points: u64 },
    /// Draws keep violating the parameter constraints or repeating deployed arms.
    Draws { tries: u64 },
}

impl std::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exhausted::Space { arms } => write!(f, "the search space is exhausted: all {arms} distinct arms have run"),
            Exhausted::Grid { points } => write!(f, "the grid is exhausted: all {points} grid points have run"),
            Exhausted::Draws { tries } => {
                write!(
                    f,
                    "no new arm found in {tries} draws (every draw violated a parameter constraint or repeated an arm)"
                )
            }
        }
    }
}

/// Draws per proposal before a finite space is enumerated instead.
const DRAWS_BEFORE_ENUMERATION: u64 = 2_000;
/// Draws per proposal before giving up on a continuous, constrained space.
const MAX_DRAWS: u64 = 200_000;
/// Finite spaces up to this size are enumerated when draws keep colliding.
const MAX_ENUMERATION: u64 = 2_000_000;

pub struct Generator<'a> {
    spec: &'a ExperimentSpec,
    seed: u64,
    pub state: GenState,
    /// What the model learns from; kept only when the method uses one.
    history: bayes::History,
    encoder: bayes::Encoder,
    /// [`Generator::uses_model`], once.
    learns: bool,
    /// What the model treats as a probability of feasibility: the outcome constraints and,
    /// for several objectives, the thresholds.
    constraints: Vec<crate::domain::OutcomeConstraint>,
}

/// The i-th point of the scrambled Sobol sequence of `seed` in `dims` dimensions.
pub fn sobol_point(i: u64, dims: usize, seed: u64) -> Vec<f64> {
    // sobol_burley holds 2^16 points per scramble: each further block gets a new scramble.
    let block = (i >> 16) as u32;
    let s = (seed as u32) ^ (seed >> 32) as u32 ^ block.wrapping_mul(0x9E37_79B9);
    (0..dims as u32)
        .map(|d| {
            let x = sobol_burley::sample((i & 0xFFFF) as u32, d % 256, s.wrapping_add(d / 256));
            // The f32's shortest decimal form, so that values read as they are meant.
            x.to_string().parse::<f64>().unwrap_or(x as f64)
        })
        .collect()
}

/// The i-th point of the seeded uniform random sequence.
pub fn random_point(i: u64, dims: usize, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(i);
    (0..dims).map(|_| rng.random::<f64>()).collect()
}

impl<'a> Generator<'a> {
    pub fn new(spec: &'a ExperimentSpec, seed: u64, state: GenState) -> Self {
        let encoder = bayes::Encoder::new(&spec.space);
        let learns = Self::uses_model(spec);
        let constraints = spec.outcome_constraints.iter().chain(&spec.goal.thresholds).cloned().collect();
        Generator { spec, seed, state, history: bayes::History::default(), encoder, learns, constraints }
    }

    /// Whether this generator learns from trials (else `pending`/`observe` need not be called).
    pub fn learns(&self) -> bool {
        self.learns
    }

    /// Whether the sequence ends in Bayesian optimization.
    pub fn uses_model(spec: &ExperimentSpec) -> bool {
        match spec.generation.method {
            GenerationMethod::Bayesian => true,
            // A finite space no larger than the budget is simply enumerated by Sobol draws.
            GenerationMethod::Auto => {
                spec.space.dims() > 0 && spec.space.cardinality().is_none_or(|c| c > spec.orchestration.max_trials)
            }
            _ => false,
        }
    }

    /// A trial was created (or found running on resume): the model fantasizes it.
    pub fn pending(&mut self, index: u64, arm: &Arm) {
        if self.learns {
            if let Some(x) = self.encoder.encode(&self.spec.space, arm) {
                self.history.pending.insert(index, x);
            }
        }
    }

    /// A trial completed with these final values (mean, SEM) of the metrics it reported.
    pub fn observe(&mut self, index: u64, arm: &Arm, values: BTreeMap<String, (f64, Option<f64>)>) {
        self.history.pending.remove(&index);
        if !self.learns {
            return;
        }
        let keep = self.spec.required_metrics();
        let values: BTreeMap<String, (f64, Option<f64>)> =
            values.into_iter().filter(|(k, v)| keep.contains(&k.as_str()) && v.0.is_finite()).collect();
        if let (Some(x), false) = (self.encoder.encode(&self.spec.space, arm), values.is_empty()) {
            self.history.completed.push(bayes::Observed { x, values });
        }
    }

    /// A trial ended without data (failed, abandoned, lost).
    pub fn forget(&mut self, index: u64) {
        self.history.pending.remove(&index);
    }

    /// What `optx validate` says will run.
    pub fn describe(spec: &ExperimentSpec) -> String {
        let init = if spec.generation.initial_points.is_empty() {
            String::new()
        } else {
            format!("{} initial point(s), then ", spec.generation.initial_points.len())
        };
        match spec.generation.method {
            GenerationMethod::Auto if !Self::uses_model(spec) => format!(
                "{init}the center point, then scrambled Sobol (auto: the space has at most max_trials arms, so no model)"
            ),
            GenerationMethod::Auto | GenerationMethod::Bayesian => format!(
                "{init}the center point, then scrambled Sobol up to {} trials, then Bayesian optimization (GP, log expected improvement{}{})",
                spec.initial_trials(),
                if spec.goal.is_multi() { " of a random Chebyshev scalarization of the objectives (ParEGO)" } else { "" },
                if spec.outcome_constraints.is_empty() && spec.goal.thresholds.is_empty() {
                    ""
                } else {
                    " x probability of feasibility"
                }
            ),
            GenerationMethod::Sobol => format!("{init}scrambled Sobol"),
            GenerationMethod::Random => format!("{init}uniform random"),
            GenerationMethod::Grid => {
                let n = spec.space.grid(spec.generation.grid_resolution).len_hint();
                format!("{init}grid of {n} points ({} per continuous float)", spec.generation.grid_resolution)
            }
        }
    }

    /// The next candidate that satisfies the parameter constraints and is not `taken`
    /// (deployed, not lost nor failed).
    pub fn next(&mut self, taken: &dyn Fn(&str) -> bool) -> Result<Proposal, Exhausted> {
        let space: &'a SearchSpace = &self.spec.space;
        while self.state.initial_points_used < self.spec.generation.initial_points.len() {
            let arm = self.spec.generation.initial_points[self.state.initial_points_used].clone();
            self.state.initial_points_used += 1;
            if !taken(&arm.key()) {
                return Ok(Proposal { arm, method: "initial_point" });
            }
        }
        let staged = matches!(self.spec.generation.method, GenerationMethod::Auto | GenerationMethod::Bayesian);
        if staged && !self.state.center_done {
            self.state.center_done = true;
            let arm = space.center();
            if space.satisfies_constraints(&arm) && !taken(&arm.key()) {
                self.state.initial_made += 1;
                return Ok(Proposal { arm, method: "center" });
            }
        }
        let initial = (self.state.initial_points_used as u64 + self.state.initial_made) < self.spec.initial_trials();
        if staged && !initial && self.learns {
            if let Some(p) = self.next_bayes(taken) {
                return Ok(p);
            }
        }
        let p = match self.spec.generation.method {
            GenerationMethod::Grid => self.next_grid(taken),
            GenerationMethod::Random => self.next_drawn(taken, "random"),
            GenerationMethod::Auto | GenerationMethod::Bayesian | GenerationMethod::Sobol => {
                self.next_drawn(taken, "sobol")
            }
        };
        if staged && initial && p.is_ok() {
            self.state.initial_made += 1;
        }
        p
    }

    /// A model's candidate, or `None` (too little data yet, or nothing left to try there):
    /// then a Sobol draw comes instead.
    fn next_bayes(&mut self, taken: &dyn Fn(&str) -> bool) -> Option<Proposal> {
        let ctx = bayes::Context {
            space: &self.spec.space,
            encoder: &self.encoder,
            goal: &self.spec.goal,
            constraints: &self.constraints,
            seed: self.seed,
            draw: self.state.bayes_draws,
            warm: &self.state.hypers,
        };
        let c = bayes::propose(&ctx, &self.history, taken)?;
        self.state.bayes_draws += 1;
        self.state.hypers = c.hypers;
        tracing::debug!(acquisition = c.acquisition, "bayesian candidate");
        Some(Proposal { arm: c.arm, method: "bayesian" })
    }

    fn next_grid(&mut self, taken: &dyn Fn(&str) -> bool) -> Result<Proposal, Exhausted> {
        let grid = self.spec.space.grid(self.spec.generation.grid_resolution);
        let points = grid.len_hint();
        for arm in grid.skip(self.state.grid_pos as usize) {
            self.state.grid_pos += 1;
            if self.spec.space.satisfies_constraints(&arm) && !taken(&arm.key()) {
                return Ok(Proposal { arm, method: "grid" });
            }
        }
        Err(Exhausted::Grid { points })
    }

    fn next_drawn(&mut self, taken: &dyn Fn(&str) -> bool, method: &'static str) -> Result<Proposal, Exhausted> {
        let space = &self.spec.space;
        let dims = space.dims();
        let finite = space.cardinality().filter(|c| *c <= MAX_ENUMERATION);
        let limit = if finite.is_some() { DRAWS_BEFORE_ENUMERATION } else { MAX_DRAWS };
        for _ in 0..limit {
            let u = if method == "random" {
                self.state.random_draws += 1;
                random_point(self.state.random_draws - 1, dims, self.seed)
            } else {
                self.state.sobol_draws += 1;
                sobol_point(self.state.sobol_draws - 1, dims, self.seed)
            };
            let arm = space.arm_from_unit(&u);
            if space.satisfies_constraints(&arm) && !taken(&arm.key()) {
                return Ok(Proposal { arm, method });
            }
        }
        let Some(arms) = finite else { return Err(Exhausted::Draws { tries: limit }) };
        // A small finite space whose draws keep colliding: pick among the arms left.
        let left: Vec<Arm> = space.grid(1).filter(|a| space.satisfies_constraints(a) && !taken(&a.key())).collect();
        if left.is_empty() {
            return Err(Exhausted::Space { arms });
        }
        let pick = random_point(self.state.random_draws, 1, self.seed ^ 0x5eed)[0];
        self.state.random_draws += 1;
        let i = ((pick * left.len() as f64) as usize).min(left.len() - 1);
        Ok(Proposal { arm: left[i].clone(), method })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::*;
    use std::collections::HashSet;
    use std::time::Duration;

    fn float(name: &str, lo: f64, hi: f64) -> Parameter {
        Parameter {
            name: name.into(),
            domain: Domain::Float { lo, hi, log: false, step: None, digits: crate::domain::DEFAULT_DIGITS },
        }
    }

    fn spec(
        method: GenerationMethod,
        parameters: Vec<Parameter>,
        constraints: Vec<LinearConstraint>,
    ) -> ExperimentSpec {
        ExperimentSpec {
            name: "g".into(),
            description: None,
            owner: None,
            seed: None,
            space: SearchSpace { parameters, constraints },
            goal: Goal::single(Objective::metric("f", Direction::Minimize)),
            outcome_constraints: vec![],
            metrics: Default::default(),
            runner: RunnerSpec::Command(CommandSpec {
                argv: vec![],
                shell: false,
                shell_quoting: vec![],
                env: vec![],
                workdir: None,
                timeout: None,
                stop_grace: Duration::from_secs(1),
                keep_trial_dirs: KeepTrialDirs::All,
                progression: "step".into(),
                origin: String::new(),
            }),
            orchestration: Orchestration { max_trials: 5, ..Default::default() },
            generation: GenerationSpec { method, initial_trials: None, initial_points: vec![], grid_resolution: 5 },
            store: crate::domain::StoreLocation::File("/tmp/g.db".into()),
            durability: Durability::Normal,
            base_dir: "/tmp".into(),
            warnings: vec![],
            early_stopping: None,
            global_stopping: None,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_sequence_and_a_restart_continues_it() {
        let s = spec(GenerationMethod::Auto, vec![float("x", 0.0, 1.0), float("y", -5.0, 5.0)], vec![]);
        let none = |_: &str| false;
        let mut a = Generator::new(&s, 7, GenState::default());
        let first: Vec<String> = (0..6).map(|_| a.next(&none).unwrap().arm.key()).collect();
        let mut b = Generator::new(&s, 7, GenState::default());
        let part: Vec<String> = (0..3).map(|_| b.next(&none).unwrap().arm.key()).collect();
        let mut c = Generator::new(&s, 7, b.state.clone());
        let rest: Vec<String> = (0..3).map(|_| c.next(&none).unwrap().arm.key()).collect();
        assert_eq!(first, [part, rest].concat());
        let mut d = Generator::new(&s, 8, GenState::default());
        d.next(&none).unwrap(); // the center is the same for every seed
        assert_ne!(d.next(&none).unwrap().arm.key(), first[1]);
    }

    #[test]
    fn auto_starts_at_the_center() {
        let c = Domain::Choice { values: vec![Value::Str("a".into()), Value::Str("b".into())], ordered: false };
        let s =
            spec(GenerationMethod::Auto, vec![float("x", 0.0, 4.0), Parameter { name: "c".into(), domain: c }], vec![]);
        let p = Generator::new(&s, 1, GenState::default()).next(&|_| false).unwrap();
        assert_eq!((p.method, p.arm.key()), ("center", r#"{"x":2.0,"c":"a"}"#.to_string()));
    }

    #[test]
    fn a_finite_space_is_exhausted_without_repeats() {
        for method in [GenerationMethod::Sobol, GenerationMethod::Random, GenerationMethod::Grid] {
            let a = Parameter { name: "a".into(), domain: Domain::Int { lo: 0, hi: 2, log: false, step: None } };
            let b = Domain::Choice { values: vec![Value::Bool(true), Value::Bool(false)], ordered: false };
            let s = spec(method, vec![a, Parameter { name: "b".into(), domain: b }], vec![]);
            let mut g = Generator::new(&s, 3, GenState::default());
            let mut seen = HashSet::new();
            loop {
                let taken = seen.clone();
                match g.next(&move |k: &str| taken.contains(k)) {
                    Ok(p) => assert!(seen.insert(p.arm.key()), "{method:?} repeated {}", p.arm.key()),
                    Err(e) => {
                        assert!(matches!(e, Exhausted::Space { arms: 6 } | Exhausted::Grid { points: 6 }), "{e:?}");
                        break;
                    }
                }
            }
            assert_eq!(seen.len(), 6, "{method:?}");
        }
    }

    #[test]
    fn constrained_draws_never_violate_the_constraints() {
        let c = LinearConstraint {
            terms: vec![("x".into(), 1.0), ("y".into(), 1.0)],
            bound: 0.3,
            text: "x + y <= 0.3".into(),
        };
        let s = spec(GenerationMethod::Auto, vec![float("x", 0.0, 1.0), float("y", 0.0, 1.0)], vec![c]);
        let mut g = Generator::new(&s, 5, GenState::default());
        for _ in 0..200 {
            let a = g.next(&|_| false).unwrap().arm;
            let (x, y) = (a.get("x").unwrap().as_f64().unwrap(), a.get("y").unwrap().as_f64().unwrap());
            assert!(x + y <= 0.3 + 1e-12, "{x} + {y}");
        }
    }
}
