//! The order in which a run visits its training pairs.

use crate::task::SplitMix64;

/// The order in which training pairs are visited: a fresh shuffle every epoch, a pure function
/// of the seed and the position, so a resumed run visits the same batches; or, without
/// shuffling, the file's order every epoch.
#[derive(Debug, Clone)]
pub struct BatchOrder {
    len: usize,
    seed: Option<u64>,
    epoch: usize,
    order: Vec<usize>,
}

impl BatchOrder {
    /// An order over `len` pairs: shuffled with `seed`, or in file order when `seed` is `None`.
    pub fn new(len: usize, seed: Option<u64>) -> Self {
        let mut order = Self {
            len,
            seed,
            epoch: usize::MAX,
            order: Vec::new(),
        };
        order.shuffle_for(0);
        order
    }

    fn shuffle_for(&mut self, epoch: usize) {
        if self.epoch != epoch {
            self.order = (0..self.len).collect();
            if let Some(seed) = self.seed {
                SplitMix64::new(seed ^ (epoch as u64).wrapping_mul(0x2545_F491_4F6C_DD1D))
                    .shuffle(&mut self.order);
            }
            self.epoch = epoch;
        }
    }

    /// The indices of micro-batch `index` (of `size` pairs) in the endless sequence of epochs.
    pub fn batch(&mut self, index: usize, size: usize) -> Vec<usize> {
        (index * size..(index + 1) * size)
            .map(|position| {
                self.shuffle_for(position / self.len);
                self.order[position % self.len]
            })
            .collect()
    }
}
