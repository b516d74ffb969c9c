//! The multi-tensor step's host side: which tensors share a launch, and where each starts.
//!
//! One launch of the multi-tensor kernel (`cuda.rs`) binds every tensor of its group as its own
//! buffers (a CubeCL `Sequence` of arrays, so the group's size is fixed when the kernel is
//! compiled) and runs one unit per element of the group; a unit finds its tensor from the
//! prefix sums of the lengths. Kept free of any GPU type, so the CPU tests cover it.

// Only the CUDA launch uses most of it.
#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

use super::StepScalars;

/// Most tensors one launch takes. A tensor costs up to seven buffer pointers (`w g m v` and
/// `w' m' v'` when they cannot alias their inputs), two length words per buffer and ten scalars
/// of kernel parameters: about 160 bytes. CUDA allows 4 KB of parameters per launch before
/// CUDA 12.1 (and on older GPUs); 20 tensors stay near 3.2 KB, with room for the rest.
pub const MAX_TENSORS_PER_LAUNCH: usize = 20;

/// Most elements one launch covers: the kernel indexes with 32-bit positions.
pub const MAX_ELEMENTS_PER_LAUNCH: usize = u32::MAX as usize;

/// One tensor of a multi-tensor step: its inputs (the backend's rank-erased float primitives,
/// so tensors of any rank go into one operation), its flag and its step's constants. Every
/// tensor of one step shares Adam's betas (one optimizer's).
pub struct MultiInput<P> {
    /// `w`.
    pub weight: P,
    /// `g` (already clipped).
    pub grad: P,
    /// `m`.
    pub moment_1: P,
    /// `v`.
    pub moment_2: P,
    /// The entry of the flag vector this tensor sets when its gradient holds NaN or inf.
    pub flag_index: usize,
    /// This tensor's constants.
    pub scalars: StepScalars,
}

/// Items with their positions among a step's tensors.
pub type Positioned<T> = Vec<(usize, T)>;

/// The outputs of a multi-tensor step (in the inputs' order) and the updated flags.
pub type Stepped<P> = (Vec<MultiOutput<P>>, P);

/// One tensor's outputs of a multi-tensor step: `w', m', v'`, of its input's shape.
pub struct MultiOutput<P> {
    /// `w'`.
    pub weight: P,
    /// `m'`.
    pub moment_1: P,
    /// `v'`.
    pub moment_2: P,
}

/// `inputs` with their primitives moved to the concrete type `T` a backend's multi-tensor step
/// is written for (the caller checked that `A` is `T`).
pub(super) fn recast_inputs<A: 'static, T: 'static>(
    inputs: Vec<MultiInput<A>>,
) -> Vec<MultiInput<T>> {
    let cast = |p| {
        super::downcast::<A, T>(p)
            .ok()
            .expect("checked: the backend is the one this step is written for")
    };
    (inputs.into_iter())
        .map(|i| MultiInput {
            weight: cast(i.weight),
            grad: cast(i.grad),
            moment_1: cast(i.moment_1),
            moment_2: cast(i.moment_2),
            flag_index: i.flag_index,
            scalars: i.scalars,
        })
        .collect()
}

/// The inverse of [`recast_inputs`], for a step's outputs and flags.
pub(super) fn recast_stepped<T: 'static, P: 'static>((outs, flags): Stepped<T>) -> Stepped<P> {
    let cast = |t| super::downcast::<T, P>(t).ok().expect("same type");
    let outs = (outs.into_iter())
        .map(|o| MultiOutput {
            weight: cast(o.weight),
            moment_1: cast(o.moment_1),
            moment_2: cast(o.moment_2),
        })
        .collect();
    (outs, cast(flags))
}

/// The launches for tensors of lengths `lens` (in step order): each a list of tensor indices,
/// consecutive, at most [`MAX_TENSORS_PER_LAUNCH`] of them and [`MAX_ELEMENTS_PER_LAUNCH`]
/// elements together (a tensor longer than that gets a launch of its own). Empty tensors are in
/// none: their step changes nothing, and a launch would bind an empty buffer.
pub fn plan_launches(lens: &[usize]) -> Vec<Vec<usize>> {
    plan_with(lens, MAX_TENSORS_PER_LAUNCH, MAX_ELEMENTS_PER_LAUNCH)
}

fn plan_with(lens: &[usize], max_tensors: usize, max_elements: usize) -> Vec<Vec<usize>> {
    let mut launches = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut elements = 0usize;
    for (index, &len) in lens.iter().enumerate() {
        if len == 0 {
            continue;
        }
        let full = current.len() == max_tensors || elements.saturating_add(len) > max_elements;
        if full && !current.is_empty() {
            launches.push(std::mem::take(&mut current));
            elements = 0;
        }
        current.push(index);
        elements = elements.saturating_add(len);
    }
    if !current.is_empty() {
        launches.push(current);
    }
    launches
}

/// Where each tensor of one launch starts among the launch's elements, and where the last one
/// ends: `lens.len() + 1` prefix sums. Unit `i` belongs to tensor `t` when
/// `starts[t] <= i < starts[t + 1]`, at element `i - starts[t]`.
pub fn starts(lens: &[usize]) -> Vec<usize> {
    let mut out = Vec::with_capacity(lens.len() + 1);
    let mut sum = 0;
    out.push(sum);
    for &len in lens {
        sum += len;
        out.push(sum);
    }
    out
}

/// The tensor and element of unit `i` of a launch with these `starts`: what the kernel's
/// unrolled search computes, for the tests.
#[cfg(test)]
fn locate(starts: &[usize], i: usize) -> Option<(usize, usize)> {
    (0..starts.len().saturating_sub(1))
        .find(|&t| starts[t] <= i && i < starts[t + 1])
        .map(|t| (t, i - starts[t]))
}

/// `items` (one per tensor, consumed) split by the plan: each launch's, in order, with their
/// positions; then the rest (the empty tensors), with theirs.
pub fn split_by_plan<T>(items: Vec<T>, plan: &[Vec<usize>]) -> (Vec<Positioned<T>>, Positioned<T>) {
    let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
    let launches = plan
        .iter()
        .map(|launch| {
            launch
                .iter()
                .map(|&i| (i, slots[i].take().expect("each tensor in one launch")))
                .collect()
        })
        .collect();
    let rest = slots
        .into_iter()
        .enumerate()
        .filter_map(|(i, s)| s.map(|t| (i, t)))
        .collect();
    (launches, rest)
}

/// The elements one launch covers (the grid's size).
pub fn elements(starts: &[usize]) -> usize {
    starts.last().copied().unwrap_or(0)
}

/// Positions of one launch's inputs among the kernel's buffers: the arrays of `w`, `g`, `m`,
/// `v` come in that order, `tensors` each, so an output aliasing an input names it by these.
pub fn input_positions(tensors: usize, t: usize) -> [usize; 3] {
    [t, 2 * tensors + t, 3 * tensors + t]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launches_take_at_most_the_tensor_limit_in_order() {
        let lens = vec![3; 45];
        let plan = plan_launches(&lens);
        assert_eq!(plan.len(), 3);
        assert_eq!(plan[0], (0..20).collect::<Vec<_>>());
        assert_eq!(plan[1], (20..40).collect::<Vec<_>>());
        assert_eq!(plan[2], (40..45).collect::<Vec<_>>());
    }

    #[test]
    fn empty_tensors_get_no_launch() {
        let plan = plan_with(&[0, 4, 0, 0, 5, 0], 2, 100);
        assert_eq!(plan, vec![vec![1, 4]]);
        assert!(plan_launches(&[0, 0]).is_empty());
        assert!(plan_launches(&[]).is_empty());
    }

    #[test]
    fn the_element_limit_splits_launches_and_a_huge_tensor_goes_alone() {
        let plan = plan_with(&[4, 4, 4, 20, 1], 10, 10);
        assert_eq!(plan, vec![vec![0, 1], vec![2], vec![3], vec![4]]);
    }

    #[test]
    fn every_unit_finds_its_tensor_and_element() {
        let lens = [3, 1, 5];
        let s = starts(&lens);
        assert_eq!(s, vec![0, 3, 4, 9]);
        assert_eq!(elements(&s), 9);
        let found: Vec<_> = (0..9).map(|i| locate(&s, i).unwrap()).collect();
        let want = [
            (0, 0),
            (0, 1),
            (0, 2),
            (1, 0),
            (2, 0),
            (2, 1),
            (2, 2),
            (2, 3),
            (2, 4),
        ];
        assert_eq!(found, want);
        assert_eq!(locate(&s, 9), None);
    }

    #[test]
    fn split_follows_the_plan_and_returns_the_rest() {
        let plan = plan_with(&[2, 0, 2, 2], 2, 100);
        let (launches, rest) = split_by_plan(vec!['a', 'b', 'c', 'd'], &plan);
        assert_eq!(launches, vec![vec![(0, 'a'), (2, 'c')], vec![(3, 'd')]]);
        assert_eq!(rest, vec![(1, 'b')]);
    }

    #[test]
    fn alias_positions_follow_the_kernel_argument_order() {
        // w[0..n], g[0..n], m[0..n], v[0..n]: w' of tensor 2 aliases buffer 2, m' 2n+2, v' 3n+2.
        assert_eq!(input_positions(5, 2), [2, 12, 17]);
    }

    #[test]
    fn the_worst_case_parameters_of_a_launch_fit_cudas_4_kb() {
        // 7 pointers (8 B) and 7 length pairs (2 x 4 B) per tensor, 10 scalars (at most 8 B),
        // then the flags buffer and the common scalars.
        let per_tensor = 7 * 8 + 7 * 8 + 10 * 8;
        assert!(MAX_TENSORS_PER_LAUNCH * per_tensor + 16 + 5 * 4 <= 4096);
    }
}
