//! Data-parallel training: `padam train <config> --devices cuda:0,cuda:1` (or `cpu:0,cpu:1`),
//! through burn's own collective operations (burn's `collective` feature: the `burn-collective`
//! crate and burn-optim's [`GradientsParams::all_reduce`]).
//!
//! One thread per device, each with its own model replica and optimizer. Rank 0 runs the
//! ordinary run driver ([`run_loop`]) with the [`Replicas`] hook; the other ranks run
//! [`replica_loop`]. At every step rank 0 sends the step's example indices and learning rate to
//! the others; each replica takes its contiguous share of the batch (`train.batch_size` is the
//! global batch), runs forward and backward, and the gradients are all-reduced (mean, over the
//! parameters in `ParamId` order, identical on every replica because the replicas are forks of
//! one model). The loss is all-reduced the same way for the logs. Every replica then applies the
//! same optimizer step: pWD is elementwise, so identical gradients, weights and states give
//! identical new weights, and the replicas stay bit-identical (checked after the last step:
//! [`ReplicaCheck`] in `final.json`). Rank 0 alone evaluates, logs and writes checkpoints; a
//! checkpoint is the same as a one-device checkpoint, so a run resumes on any number of devices.
//! Pruning masks (`[prune]`) are computed by rank 0 and sent to the others, which apply them
//! as rank 0 does (at once, then after every step).
//!
//! Shares of unequal size are weighted (`loss_r * n_r * N / B`), so the mean over replicas is
//! the mean over the whole batch, as on one device. Data order is the one-device order; rank 0
//! draws augmentation / window sampling and dropout from the one-device streams, rank `r` from
//! streams forked by `r`. On the CPU (one global backend RNG) each replica seeds and runs its
//! forward pass under a lock, so CPU runs are reproducible; burn-collective sums two replicas
//! in a fixed way, more than two in an order that can vary between runs (float rounding).
//!
//! A replica that fails (error or panic) resets burn's collective, which makes the others'
//! pending all-reduce return an error instead of waiting forever; the error reported is the
//! replica's own, not the resulting "collective aborted" of the others.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;
use std::thread::ScopedJoinHandle;

use anyhow::Context;
use burn::collective::{self, CollectiveConfig, CollectiveError, PeerId, ReduceOperation};
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorPrimitive};

use super::args::TrainArgs;
use super::config::TrainConfig;
use super::driver::{run_loop, step_seed, ReplicaCheck, Replicas, Summary};
use super::optimizers::TrainOptimizer;
use super::prune;
use super::task::Task;
use crate::data::Rng;

/// Train on `devices` (two or more), one replica each; rank 0 (`devices[0]`) runs the driver.
pub(crate) fn run<B, T, O>(
    config: &TrainConfig,
    args: &TrainArgs,
    dir: &Path,
    task: &T,
    optim: O,
    devices: &[B::Device],
) -> anyhow::Result<Summary>
where
    B: AutodiffBackend,
    T: Task<B> + Sync,
    O: Optimizer<T::Model, B> + TrainOptimizer<B, T::Model>,
{
    let n = devices.len();
    let collective = CollectiveConfig::default().with_num_devices(n);
    // Forget peers of an earlier run of this process that stopped on an error.
    collective::reset_collective::<B::InnerBackend>();
    tracing::info!(devices = ?devices, "data-parallel");
    std::thread::scope(|s| {
        let mut leader = Leader::<B, T, O> {
            task,
            seed: config.seed,
            device: devices[0].clone(),
            n,
            senders: Vec::new(),
            workers: Vec::new(),
            started: false,
            masks: None,
        };
        for (rank, device) in devices.iter().enumerate().skip(1) {
            let (tx, rx) = channel();
            let (device, collective, seed) = (device.clone(), collective.clone(), config.seed);
            leader.workers.push(
                s.spawn(move || worker::<B, T, O>(rank, n, task, seed, device, collective, rx)),
            );
            leader.senders.push(tx);
        }
        let peer = PeerId::from(0usize);
        let result = catch_unwind(AssertUnwindSafe(|| {
            collective::register::<B::InnerBackend>(peer, devices[0].clone(), collective)
                .map_err(|e| aborted(e, "register"))?;
            run_loop(
                config,
                args,
                dir,
                task,
                optim,
                &devices[0],
                Some(&mut leader),
            )
        }))
        .unwrap_or_else(|p| Err(anyhow::anyhow!("rank 0 panicked: {}", panic_message(&*p))));
        match result {
            Ok(summary) => {
                collective::finish_collective::<B::InnerBackend>(peer)
                    .map_err(|e| aborted(e, "finish"))?;
                Ok(summary)
            }
            Err(e) => {
                collective::reset_collective::<B::InnerBackend>();
                let others = leader.shutdown();
                if !is_aborted(&e) {
                    return Err(e);
                }
                // Rank 0 only saw the collective abort: report the replica that stopped.
                let root = others
                    .into_iter()
                    .find_map(|(rank, r)| r.err().filter(|w| !is_aborted(w)).map(|w| (rank, w)));
                match root {
                    Some((rank, w)) => Err(w.context(format!(
                        "data-parallel replica {rank} (device {:?}) stopped",
                        devices[rank]
                    ))),
                    None => Err(e),
                }
            }
        }
    })
}

/// What rank 0 sends to the other replicas.
enum Msg<M, O> {
    /// The model and optimizer to start from: rank 0's, as initialised or resumed.
    Start { model: M, optim: O },
    /// One step: the whole batch's example indices and the learning rate.
    Step {
        step: usize,
        lr: f64,
        indices: Vec<usize>,
    },
    /// New pruning masks, applied at once and after every later step (as rank 0 does).
    Masks(prune::Masks),
}

/// What a replica thread ends with: its final weights (none if it never started).
type ReplicaEnd = anyhow::Result<Option<Vec<f32>>>;

/// Rank 0's side of the replicas: the hook [`run_loop`] calls.
struct Leader<'scope, 'a, B: AutodiffBackend, T: Task<B>, O> {
    task: &'a T,
    seed: u64,
    device: B::Device,
    n: usize,
    senders: Vec<Sender<Msg<T::Model, O>>>,
    workers: Vec<ScopedJoinHandle<'scope, ReplicaEnd>>,
    started: bool,
    masks: Option<prune::Masks>,
}

impl<B: AutodiffBackend, T: Task<B>, O> Leader<'_, '_, B, T, O> {
    /// Close the channels (the replicas leave their loop) and wait for every replica.
    fn shutdown(&mut self) -> Vec<(usize, ReplicaEnd)> {
        self.senders.clear();
        self.workers
            .drain(..)
            .enumerate()
            .map(|(i, h)| {
                let end = h
                    .join()
                    .unwrap_or_else(|p| Err(anyhow::anyhow!("panicked: {}", panic_message(&*p))));
                (i + 1, end)
            })
            .collect()
    }

    fn send(&self, msg: impl Fn() -> Msg<T::Model, O>) -> anyhow::Result<()> {
        for (i, tx) in self.senders.iter().enumerate() {
            tx.send(msg()).map_err(|_| {
                anyhow::Error::new(Aborted {
                    what: "step",
                    error: format!("replica {} has stopped", i + 1),
                })
            })?;
        }
        Ok(())
    }
}

impl<B, T, O> Replicas<B, T::Model, O> for Leader<'_, '_, B, T, O>
where
    B: AutodiffBackend,
    T: Task<B>,
    O: Optimizer<T::Model, B>,
{
    fn masks_changed(&mut self, masks: &prune::Masks) -> anyhow::Result<()> {
        if self.started {
            self.send(|| Msg::Masks(masks.clone()))
        } else {
            self.masks = Some(masks.clone()); // sent with the start
            Ok(())
        }
    }

    fn grads(
        &mut self,
        model: &T::Model,
        optim: &O,
        step: usize,
        lr: f64,
        indices: &[usize],
    ) -> anyhow::Result<(Tensor<B, 1>, GradientsParams)> {
        if !self.started {
            self.send(|| Msg::Start {
                model: model.clone(),
                optim: optim.clone(),
            })?;
            self.started = true;
            if let Some(m) = self.masks.take() {
                self.send(|| Msg::Masks(m.clone()))?;
            }
        }
        self.send(|| Msg::Step {
            step,
            lr,
            indices: indices.to_vec(),
        })?;
        replica_grads::<B, T>(
            self.task,
            model,
            0,
            self.n,
            self.seed,
            step,
            indices,
            &self.device,
        )
    }

    fn finish(&mut self, model: &T::Model) -> anyhow::Result<ReplicaCheck> {
        let ends = self.shutdown();
        let w0 = flat_weights(&model.valid());
        let mut check = ReplicaCheck {
            devices: self.n,
            max_abs_diff: 0.0,
            identical: true,
        };
        for (rank, end) in ends {
            let Some(w) = end.with_context(|| format!("data-parallel replica {rank}"))? else {
                continue; // the run was already complete: no step, nothing to compare
            };
            anyhow::ensure!(
                w.len() == w0.len(),
                "replica {rank}: the weights differ in size"
            );
            for (a, b) in w.iter().zip(&w0) {
                check.identical &= a.to_bits() == b.to_bits();
                let d = (f64::from(*a) - f64::from(*b)).abs();
                if d > check.max_abs_diff || d.is_nan() {
                    check.max_abs_diff = d; // a NaN difference is kept
                }
            }
        }
        if !check.identical {
            tracing::warn!(
                max_abs_diff = check.max_abs_diff,
                "the replicas' weights differ from rank 0's"
            );
        }
        Ok(check)
    }
}

/// A replica thread: [`replica_loop`], turning a panic into an error, and on any failure
/// resetting the collective so the other replicas stop waiting for this one.
fn worker<B, T, O>(
    rank: usize,
    n: usize,
    task: &T,
    seed: u64,
    device: B::Device,
    collective: CollectiveConfig,
    rx: Receiver<Msg<T::Model, O>>,
) -> ReplicaEnd
where
    B: AutodiffBackend,
    T: Task<B>,
    O: Optimizer<T::Model, B> + TrainOptimizer<B, T::Model>,
{
    let end = catch_unwind(AssertUnwindSafe(|| {
        replica_loop::<B, T, O>(rank, n, task, seed, &device, collective, &rx)
    }))
    .unwrap_or_else(|p| Err(anyhow::anyhow!("panicked: {}", panic_message(&*p))));
    if end.is_err() {
        collective::reset_collective::<B::InnerBackend>();
    }
    end
}

/// Rank `rank >= 1`: register, then one step per message until rank 0 closes the channel.
fn replica_loop<B, T, O>(
    rank: usize,
    n: usize,
    task: &T,
    seed: u64,
    device: &B::Device,
    collective: CollectiveConfig,
    rx: &Receiver<Msg<T::Model, O>>,
) -> ReplicaEnd
where
    B: AutodiffBackend,
    T: Task<B>,
    O: Optimizer<T::Model, B> + TrainOptimizer<B, T::Model>,
{
    let peer = PeerId::from(rank);
    collective::register::<B::InnerBackend>(peer, device.clone(), collective)
        .map_err(|e| aborted(e, "register"))?;
    let mut state: Option<(T::Model, O)> = None;
    let mut masks: Option<prune::ActiveMasks<B>> = None;
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Start { model, optim } => state = Some((model.fork(device), optim)),
            Msg::Masks(m) => {
                let m = prune::ActiveMasks::new(m, device);
                if let Some((model, optim)) = state.take() {
                    state = Some((m.apply(model), optim));
                }
                masks = Some(m);
            }
            Msg::Step { step, lr, indices } => {
                let (mut model, mut optim) = state.take().context("a step before the start")?;
                let (_, grads) =
                    replica_grads::<B, T>(task, &model, rank, n, seed, step, &indices, device)?;
                model = optim.train_step(lr, model, grads)?;
                if let Some(m) = &masks {
                    model = m.apply(model);
                }
                state = Some((model, optim));
            }
        }
    }
    collective::finish_collective::<B::InnerBackend>(peer).map_err(|e| aborted(e, "finish"))?;
    Ok(state.map(|(model, _)| flat_weights(&model.valid())))
}

/// The backend RNG is one per process on the CPU: each replica seeds it and draws its dropout
/// masks (the forward pass) while holding this lock.
static FORWARD: Mutex<()> = Mutex::new(());

/// Replica `rank`'s share of step `step`: its loss and gradients, all-reduced (mean) with the
/// other replicas'. Returns the mean loss of the whole batch (detached) and the gradients.
#[allow(clippy::too_many_arguments)]
fn replica_grads<B: AutodiffBackend, T: Task<B>>(
    task: &T,
    model: &T::Model,
    rank: usize,
    n: usize,
    seed: u64,
    step: usize,
    indices: &[usize],
    device: &B::Device,
) -> anyhow::Result<(Tensor<B, 1>, GradientsParams)> {
    let (range, factor) = share(indices.len(), rank, n);
    let loss = {
        let _turn = FORWARD.lock().unwrap_or_else(|e| e.into_inner());
        B::seed(device, replica_seed(seed, step, 2, rank));
        let mut rng = Rng::new(replica_seed(seed, step, 3, rank));
        task.loss(model, &indices[range], &mut rng, device)
    };
    let loss = if factor == 1.0 {
        loss
    } else {
        loss.mul_scalar(factor)
    };
    let grads = GradientsParams::from_grads(loss.clone().backward(), model);
    let peer = PeerId::from(rank);
    let grads = grads
        .all_reduce::<B::InnerBackend>(peer, ReduceOperation::Mean)
        .map_err(|e| aborted(e, "all-reduce of the gradients"))?;
    let loss = loss.detach().inner().into_primitive().tensor();
    let loss = collective::all_reduce::<B::InnerBackend>(peer, loss, ReduceOperation::Mean)
        .map_err(|e| aborted(e, "all-reduce of the loss"))?;
    let loss = Tensor::from_inner(Tensor::from_primitive(TensorPrimitive::Float(loss)));
    Ok((loss, grads))
}

/// Replica `rank`'s share of a batch of `len` examples (a balanced contiguous slice) and the
/// factor on its mean loss (`n_r * n / len`, 1 for equal shares) that makes the mean over the
/// replicas the mean over the whole batch. A replica left without examples (a last batch
/// smaller than `n`) takes the first example with factor 0: it joins the all-reduce with zero
/// gradients.
pub fn share(len: usize, rank: usize, n: usize) -> (std::ops::Range<usize>, f64) {
    let (start, end) = (rank * len / n, (rank + 1) * len / n);
    if start == end {
        return (0..1, 0.0);
    }
    (start..end, ((end - start) * n) as f64 / len as f64)
}

/// Rank 0 uses the one-device random streams, rank `r` the same streams forked by `r`.
fn replica_seed(seed: u64, step: usize, stream: u64, rank: usize) -> u64 {
    let s = step_seed(seed, step, stream);
    if rank == 0 {
        s
    } else {
        Rng::new(s).fork(rank as u64).next_u64()
    }
}

/// Every float parameter's values, in module order (one device read per tensor).
fn flat_weights<B: Backend, M: Module<B>>(module: &M) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl<B: Backend> ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let data = param.val().into_data().convert::<f32>();
            self.0.extend(data.iter::<f32>());
        }
    }
    let mut c = Collect(Vec::new());
    module.visit(&mut c);
    c.0
}

/// A collective operation failed, usually because another replica stopped and reset it.
#[derive(Debug, thiserror::Error)]
#[error("collective {what} failed: {error} (another replica stopped?)")]
struct Aborted {
    what: &'static str,
    error: String,
}

fn aborted(e: CollectiveError, what: &'static str) -> anyhow::Error {
    anyhow::Error::new(Aborted {
        what,
        error: format!("{e:?}"),
    })
}

fn is_aborted(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Aborted>())
}

fn panic_message(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn shares_cover_the_batch_and_weigh_to_its_mean() {
        for (len, n) in [(32, 2), (29, 2), (7, 3), (2, 4), (1, 3)] {
            let mut next = 0;
            let mut weight = 0.0;
            for rank in 0..n {
                let (r, f) = share(len, rank, n);
                if f > 0.0 {
                    assert_eq!(r.start, next, "contiguous, in rank order");
                    next = r.end;
                }
                weight += f / n as f64;
            }
            assert_eq!(next, len);
            assert!((weight - 1.0).abs() < 1e-12, "{len} {n}: {weight}");
        }
        assert_eq!(share(32, 1, 2), (16..32, 1.0));
    }
}
