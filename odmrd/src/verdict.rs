//! What the customer's replies decide for one recipient: replies in, outcome out.
//!
//! This module owns the one rule that decides whether a recipient may leave the queue. It is a
//! pure function of the reply codes of one transaction (MAIL, the recipient's RCPT, DATA and the
//! final dot), so every combination is tested in a table here rather than end to end. It does
//! not send, read, log or commit anything: [`crate::relay`] does.
//!
//! The rule: a recipient is delivered only by a 2xx to the final dot after `354` to DATA and
//! 2xx to MAIL and to its own RCPT. Any reply the dialogue does not allow at its step (a 2xx to
//! DATA, a 3xx anywhere but DATA, no reply where one was due) means the replies are out of step
//! with our commands — a broken MTA, a proxy, an unsolicited extra reply shifting the pipelined
//! ones — so nothing of the message is trusted: it stays queued and the session ends. Exim's
//! smtp transport and qmail-remote likewise require `3xx` to DATA.

use odmr_api::Outcome;

/// The step of a transaction whose reply decided a recipient's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Mail,
    Rcpt,
    Data,
    End,
}

/// The decision for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The reply at `Step` settles the recipient; the outcome is committed.
    Settled(Outcome, Step),
    /// The reply at `Step` (or its absence) is not one the dialogue allows there: the customer's
    /// replies cannot be matched to our commands any more. Nothing of the message is committed
    /// and the session ends.
    OutOfStep(Step),
    /// The customer's limit on this transaction, not a verdict on the recipient: it stays
    /// queued (no outcome) and is sent again in a later transaction on the same connection.
    Again(Step),
}

/// RCPT replies that mean "too many recipients in this transaction": `452` and, although 5xx,
/// `552`, which RFC 5321 §4.5.3.1.10 says to treat as temporary. The client sends the rest in
/// another transaction, as Exim's smtp transport does on the same connection.
const ANOTHER_TRANSACTION: [u16; 2] = [452, 552];

/// Decide one recipient from the codes its transaction received. `None` means no reply was read
/// for that step (the command was not sent, or its reply never came).
pub fn decide(mail: u16, rcpt: Option<u16>, data: Option<u16>, end: Option<u16>) -> Decision {
    use Decision::{OutOfStep, Settled};
    match class(mail) {
        2 => {}
        4 => return Settled(Outcome::TempFail, Step::Mail),
        5 => return Settled(Outcome::PermFail, Step::Mail),
        _ => return OutOfStep(Step::Mail),
    }
    let Some(rcpt) = rcpt else { return OutOfStep(Step::Rcpt) };
    match class(rcpt) {
        2 => {}
        4 | 5 if ANOTHER_TRANSACTION.contains(&rcpt) => return Decision::Again(Step::Rcpt),
        4 => return Settled(Outcome::TempFail, Step::Rcpt),
        5 => return Settled(Outcome::PermFail, Step::Rcpt),
        _ => return OutOfStep(Step::Rcpt),
    }
    match data {
        Some(354) => {}
        Some(code) if class(code) == 4 => return Settled(Outcome::TempFail, Step::Data),
        Some(code) if class(code) == 5 => return Settled(Outcome::PermFail, Step::Data),
        // A 2xx here would mean "delivered" without a body ever being sent.
        _ => return OutOfStep(Step::Data),
    }
    match end.map(class) {
        Some(2) => Settled(Outcome::Delivered, Step::End),
        Some(4) => Settled(Outcome::TempFail, Step::End),
        Some(5) => Settled(Outcome::PermFail, Step::End),
        _ => OutOfStep(Step::End),
    }
}

/// Are the replies before the body (MAIL, each recipient's RCPT, DATA) ones the dialogue allows
/// at their steps? Pipelining across messages asks this of the next message's replies, which
/// came behind the previous message's final reply, before that message is committed: an extra
/// or missing reply would shift them, so the previous final reply could not be trusted either.
pub fn in_step_before_body(mail: u16, rcpts: &[Option<u16>], data: Option<u16>) -> bool {
    rcpts.iter().all(|&rcpt| match decide(mail, rcpt, data, None) {
        Decision::Settled(..) | Decision::Again(..) => true,
        // Everything up to the body is in step; the end is simply not there yet.
        Decision::OutOfStep(step) => step == Step::End,
    })
}

fn class(code: u16) -> u16 {
    code / 100
}

#[cfg(test)]
mod tests {
    use super::{decide, in_step_before_body, Decision, Decision::*, Step};
    use odmr_api::Outcome::{Delivered, PermFail, TempFail};

    /// The codes of one transaction: MAIL, RCPT, DATA, end of data.
    type Replies = (u16, Option<u16>, Option<u16>, Option<u16>);

    /// Every class at every step, and the codes with a meaning of their own.
    #[rustfmt::skip]
    const CASES: &[(Replies, Decision)] = &[
        // The one way to be delivered.
        ((250, Some(250), Some(354), Some(250)), Settled(Delivered, Step::End)),
        ((250, Some(251), Some(354), Some(250)), Settled(Delivered, Step::End)),
        // The final reply decides after 354.
        ((250, Some(250), Some(354), Some(451)), Settled(TempFail, Step::End)),
        ((250, Some(250), Some(354), Some(421)), Settled(TempFail, Step::End)),
        ((250, Some(250), Some(354), Some(554)), Settled(PermFail, Step::End)),
        ((250, Some(250), Some(354), Some(354)), OutOfStep(Step::End)),
        ((250, Some(250), Some(354), None), OutOfStep(Step::End)),
        // DATA: only 354 proceeds. A 2xx is the reply that used to lose mail.
        ((250, Some(250), Some(250), None), OutOfStep(Step::Data)),
        ((250, Some(250), Some(250), Some(250)), OutOfStep(Step::Data)),
        ((250, Some(250), Some(221), None), OutOfStep(Step::Data)),
        ((250, Some(250), Some(334), None), OutOfStep(Step::Data)),
        ((250, Some(250), Some(451), None), Settled(TempFail, Step::Data)),
        ((250, Some(250), Some(421), None), Settled(TempFail, Step::Data)),
        ((250, Some(250), Some(554), None), Settled(PermFail, Step::Data)),
        ((250, Some(250), None, None), OutOfStep(Step::Data)),
        // RCPT.
        ((250, Some(450), Some(354), Some(250)), Settled(TempFail, Step::Rcpt)),
        ((250, Some(452), Some(354), Some(250)), Again(Step::Rcpt)),
        ((250, Some(452), None, None), Again(Step::Rcpt)),
        ((250, Some(550), Some(354), Some(250)), Settled(PermFail, Step::Rcpt)),
        ((250, Some(553), None, None), Settled(PermFail, Step::Rcpt)),
        ((250, Some(552), Some(354), Some(250)), Again(Step::Rcpt)),
        ((250, Some(354), Some(354), Some(250)), OutOfStep(Step::Rcpt)),
        ((250, None, None, None), OutOfStep(Step::Rcpt)),
        // MAIL.
        ((451, None, None, None), Settled(TempFail, Step::Mail)),
        ((451, Some(250), Some(354), Some(250)), Settled(TempFail, Step::Mail)),
        ((552, Some(250), Some(354), Some(250)), Settled(PermFail, Step::Mail)),
        ((550, Some(503), Some(503), None), Settled(PermFail, Step::Mail)),
        ((354, Some(250), Some(354), Some(250)), OutOfStep(Step::Mail)),
    ];

    #[test]
    fn every_listed_combination() {
        for &((mail, rcpt, data, end), expected) in CASES {
            assert_eq!(decide(mail, rcpt, data, end), expected, "{mail} {rcpt:?} {data:?} {end:?}");
        }
    }

    #[test]
    fn the_replies_before_a_body_are_in_step_or_not() {
        assert!(in_step_before_body(250, &[Some(250), Some(250)], Some(354)));
        assert!(in_step_before_body(250, &[Some(550), Some(250)], Some(354)));
        assert!(in_step_before_body(250, &[Some(550)], Some(554)));
        assert!(in_step_before_body(451, &[Some(503)], Some(503)));
        assert!(in_step_before_body(250, &[Some(250)], Some(421)));
        // A 2xx to DATA, a 354 where none belongs, a missing reply: shifted.
        assert!(!in_step_before_body(250, &[Some(250)], Some(250)));
        assert!(!in_step_before_body(250, &[Some(354)], Some(354)));
        assert!(!in_step_before_body(354, &[Some(250)], Some(354)));
        assert!(!in_step_before_body(250, &[Some(250), None], Some(354)));
        assert!(!in_step_before_body(250, &[Some(250)], None));
    }

    /// Exhaustively over one code of each class (and none) at each step: a recipient is
    /// delivered exactly when MAIL and RCPT got 2xx, DATA got 354 and the end got 2xx.
    #[test]
    fn delivered_only_by_the_full_sequence() {
        let codes =
            [None, Some(221), Some(250), Some(354), Some(334), Some(421), Some(451), Some(552), Some(554)];
        for mail in codes.iter().flatten() {
            for rcpt in codes {
                for data in codes {
                    for end in codes {
                        let delivered = decide(*mail, rcpt, data, end) == Settled(Delivered, Step::End);
                        let full = mail / 100 == 2
                            && rcpt.is_some_and(|c| c / 100 == 2)
                            && data == Some(354)
                            && end.is_some_and(|c| c / 100 == 2);
                        assert_eq!(delivered, full, "{mail} {rcpt:?} {data:?} {end:?}");
                    }
                }
            }
        }
    }
}
