//! The multi-tensor step's host side: which tensors share a launch, and where each starts.
//!
//! One launch of the multi-tensor kernel (`cuda.rs`) binds every tensor of its group as its own
//! buffers (a CubeCL `Sequence` of arrays, so the group's size is fixed when the kernel is
//! compiled) and runs one unit per line of the group: [`WIDE_LINE`] elements (one 128-bit load
//! or store per buffer) where every tensor of the group allows it, else one. A unit finds its
//! tensor from the prefix sums of the lengths in lines. Kept free of any GPU type, so the CPU
//! tests cover it.

// Only the CUDA launch uses most of it.
#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

use super::StepScalars;

/// Most tensors one launch takes. A tensor costs up to seven buffer pointers (`w g m v` and
/// `w' m' v'` when they cannot alias their inputs), two length words per buffer and ten scalars
/// of kernel parameters: about 160 bytes. CUDA allows 4 KB of parameters per launch before
/// CUDA 12.1 (and on older GPUs); 20 tensors stay near 3.2 KB, with room for the rest.
pub const MAX_TENSORS_PER_LAUNCH: usize = 20;

/// Most lines (units) one launch covers: the kernel indexes with 32-bit positions.
pub const MAX_LINES_PER_LAUNCH: usize = u32::MAX as usize;

/// Elements per line of a wide launch: 4 f32, 16 bytes, so each unit moves its `w g m v` and
/// `w' m' v'` with 128-bit accesses, which come nearer the DRAM's peak than 32-bit ones.
pub const WIDE_LINE: usize = 4;

/// Byte alignment a wide launch needs of every buffer it binds (that of a 128-bit access).
pub const WIDE_ALIGN: u64 = (WIDE_LINE * core::mem::size_of::<f32>()) as u64;

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
/// consecutive, at most [`MAX_TENSORS_PER_LAUNCH`] of them and [`MAX_LINES_PER_LAUNCH`]
/// units together (a tensor longer than that gets a launch of its own). Empty tensors are in
/// none: their step changes nothing, and a launch would bind an empty buffer.
pub fn plan_launches(lens: &[usize]) -> Vec<Vec<usize>> {
    plan_with(lens, MAX_TENSORS_PER_LAUNCH, MAX_LINES_PER_LAUNCH)
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

/// One launch of the multi-tensor kernel: its line size and its tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Elements per line (per unit): [`WIDE_LINE`] or 1; the kernel is compiled for it.
    pub line_size: usize,
    /// The tensors, by their positions in the step, in step order.
    pub tensors: Vec<usize>,
}

/// The line size a tensor of `len` elements takes: [`WIDE_LINE`] when `len` is a multiple of it
/// and every buffer of the tensor starts on [`WIDE_ALIGN`] bytes (`aligned`), else 1 (a line
/// must neither straddle two tensors nor start off a 16-byte boundary).
pub fn line_size(len: usize, aligned: bool) -> usize {
    if aligned && len.is_multiple_of(WIDE_LINE) {
        WIDE_LINE
    } else {
        1
    }
}

/// The launches of a step: the tensors of each line size (see [`line_size`]) grouped as
/// [`plan_launches`] groups them, over their lengths in lines; the wide launches first (the
/// launches are independent, so their order changes nothing). `aligned[i]` says whether tensor
/// `i`'s buffers allow 128-bit accesses.
pub fn plan_line_launches(lens: &[usize], aligned: &[bool]) -> Vec<Launch> {
    assert_eq!(lens.len(), aligned.len(), "one alignment per tensor");
    let mut launches = Vec::new();
    for line in [WIDE_LINE, 1] {
        let members: Vec<usize> = (0..lens.len())
            .filter(|&i| line_size(lens[i], aligned[i]) == line)
            .collect();
        let lines: Vec<usize> = members.iter().map(|&i| lens[i] / line).collect();
        launches.extend(plan_launches(&lines).into_iter().map(|group| Launch {
            line_size: line,
            tensors: group.into_iter().map(|k| members[k]).collect(),
        }));
    }
    launches
}

/// Where each tensor of one launch starts among the launch's lines, and where the last one
/// ends: `lens.len() + 1` prefix sums of the lengths in lines. Unit `i` belongs to tensor `t`
/// when `starts[t] <= i < starts[t + 1]`, at line `i - starts[t]`.
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
pub fn split_by_plan<T>(items: Vec<T>, plan: &[Launch]) -> (Vec<Positioned<T>>, Positioned<T>) {
    let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
    let launches = plan
        .iter()
        .map(|launch| {
            (launch.tensors.iter())
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

/// The lines (units) one launch covers: the grid's size.
pub fn lines(starts: &[usize]) -> usize {
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
        assert_eq!(lines(&s), 9);
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
        let plan: Vec<Launch> = (plan_with(&[2, 0, 2, 2], 2, 100).into_iter())
            .map(|tensors| Launch {
                line_size: 1,
                tensors,
            })
            .collect();
        let (launches, rest) = split_by_plan(vec!['a', 'b', 'c', 'd'], &plan);
        assert_eq!(launches, vec![vec![(0, 'a'), (2, 'c')], vec![(3, 'd')]]);
        assert_eq!(rest, vec![(1, 'b')]);
    }

    fn launch(line_size: usize, tensors: &[usize]) -> Launch {
        Launch {
            line_size,
            tensors: tensors.to_vec(),
        }
    }

    #[test]
    fn a_length_that_is_no_multiple_of_four_takes_lines_of_one() {
        assert_eq!(line_size(10, true), 1);
        assert_eq!(line_size(1, true), 1);
        assert_eq!(line_size(4097, true), 1);
        assert_eq!(plan_line_launches(&[10], &[true]), vec![launch(1, &[0])]);
    }

    #[test]
    fn multiples_of_four_take_wide_lines_and_count_in_lines() {
        assert_eq!(line_size(64, true), WIDE_LINE);
        assert_eq!(line_size(4096, true), WIDE_LINE);
        let plan = plan_line_launches(&[64, 4096], &[true, true]);
        assert_eq!(plan, vec![launch(WIDE_LINE, &[0, 1])]);
        let s = starts(&[64 / WIDE_LINE, 4096 / WIDE_LINE]);
        assert_eq!(s, vec![0, 16, 1040]);
        assert_eq!(lines(&s), 1040);
        assert_eq!(locate(&s, 15), Some((0, 15)));
        assert_eq!(locate(&s, 16), Some((1, 0)));
        assert_eq!(locate(&s, 1040), None);
    }

    #[test]
    fn an_unaligned_buffer_keeps_its_tensor_in_lines_of_one() {
        assert_eq!(line_size(64, false), 1);
        let plan = plan_line_launches(&[64, 4096], &[false, true]);
        assert_eq!(plan, vec![launch(WIDE_LINE, &[1]), launch(1, &[0])]);
    }

    #[test]
    fn a_mixed_step_splits_by_line_size_in_step_order() {
        let lens = [10, 64, 4096, 0, 3, 4096, 10, 8];
        let plan = plan_line_launches(&lens, &[true; 8]);
        assert_eq!(
            plan,
            vec![launch(WIDE_LINE, &[1, 2, 5, 7]), launch(1, &[0, 4, 6])]
        );
        // Every non-empty tensor is in exactly one launch; the empty one in none.
        let mut seen: Vec<usize> = plan.iter().flat_map(|l| l.tensors.clone()).collect();
        seen.sort_unstable();
        assert_eq!(seen, vec![0, 1, 2, 4, 5, 6, 7]);
        let (launches, rest) = split_by_plan(lens.to_vec(), &plan);
        assert_eq!(launches[0], vec![(1, 64), (2, 4096), (5, 4096), (7, 8)]);
        assert_eq!(launches[1], vec![(0, 10), (4, 3), (6, 10)]);
        assert_eq!(rest, vec![(3, 0)]);
    }

    #[test]
    fn each_line_size_keeps_the_tensor_limit() {
        let mut lens = vec![64; 25];
        lens.extend([10; 25]);
        let plan = plan_line_launches(&lens, &[true; 50]);
        let shape: Vec<(usize, usize)> = plan
            .iter()
            .map(|l| (l.line_size, l.tensors.len()))
            .collect();
        assert_eq!(
            shape,
            vec![(WIDE_LINE, 20), (WIDE_LINE, 5), (1, 20), (1, 5)]
        );
        assert_eq!(plan[0].tensors, (0..20).collect::<Vec<_>>());
        assert_eq!(plan[3].tensors, (45..50).collect::<Vec<_>>());
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
