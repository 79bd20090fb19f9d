//! For a noisy objective, the best trial as the model sees it (Ax reports the best point by
//! its model's predictions): the completed, feasible trial whose posterior mean is best,
//! with that mean and its standard deviation, beside its observed value. The best observed
//! value of a noisy objective is partly luck; the model's pick averages the luck out. The
//! caller fits the model (`generate` is not this layer's to use) and hands the pick here.

#[derive(Debug, Clone, PartialEq)]
pub struct ModelBest {
    pub index: u64,
    /// The model's mean and standard deviation of the objective there.
    pub mean: f64,
    pub sd: f64,
    /// What the trial reported.
    pub observed: f64,
}
