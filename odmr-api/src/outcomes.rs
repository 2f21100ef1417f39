//! A queue cursor's bookkeeping for its current message: which of the
//! message's recipients were offered to the host, and the outcome the host
//! recorded for each, so that a commit changes exactly those.
//!
//! The rule every queue backend applies: a recipient without a recorded
//! outcome stays queued (as with [`Outcome::TempFail`]); [`Outcome::Delivered`]
//! and [`Outcome::PermFail`] leave the queue at commit. Safe code only.

use crate::{Outcome, Status};

/// The offered recipients of one message and their recorded outcomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcomes {
    /// Indices into the message's recipients, in the order offered (the
    /// host's recipient index `n` is `offered[n]`).
    offered: Vec<usize>,
    outcomes: Vec<Option<Outcome>>,
}

impl Outcomes {
    /// Nothing recorded yet for the recipients at `offered` (indices into
    /// the message's recipients, in the order they are offered).
    pub fn new(offered: Vec<usize>) -> Outcomes {
        let outcomes = vec![None; offered.len()];
        Outcomes { offered, outcomes }
    }

    /// The offered indices, in order.
    pub fn offered(&self) -> &[usize] {
        &self.offered
    }

    /// Record the outcome of the host's recipient `index`;
    /// `InvalidArgument` when no such recipient was offered.
    pub fn set(&mut self, index: usize, outcome: Outcome) -> Result<(), Status> {
        let slot = self.outcomes.get_mut(index).ok_or(Status::InvalidArgument)?;
        *slot = Some(outcome);
        Ok(())
    }

    /// The message's recipients (their indices, in offered order) that leave
    /// the queue at commit: delivered or permanently failed.
    pub fn finished(&self) -> impl Iterator<Item = usize> + '_ {
        self.offered
            .iter()
            .zip(&self.outcomes)
            .filter(|(_, outcome)| matches!(outcome, Some(Outcome::Delivered | Outcome::PermFail)))
            .map(|(&i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_delivered_and_bounced_recipients_are_finished() {
        let mut o = Outcomes::new(vec![4, 1, 7, 2]);
        assert_eq!(o.offered(), [4, 1, 7, 2]);
        assert_eq!(o.finished().count(), 0);
        o.set(0, Outcome::Delivered).unwrap();
        o.set(1, Outcome::TempFail).unwrap();
        o.set(2, Outcome::PermFail).unwrap();
        assert_eq!(o.set(4, Outcome::Delivered), Err(Status::InvalidArgument));
        assert_eq!(o.finished().collect::<Vec<_>>(), [4, 7]);
        o.set(0, Outcome::TempFail).unwrap();
        assert_eq!(o.finished().collect::<Vec<_>>(), [7]);
    }
}
