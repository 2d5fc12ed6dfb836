//! Customer support tickets (the `global` shard): a ticket is opened by a customer
//! about one of their bookings, carries messages between the customer and support
//! agents, and moves through statuses.
//!
//! The api decides who is an agent (roles `admin` and `support`) and that a booking
//! belongs to its customer before proposing; the ledger enforces what it can see: a
//! customer writes only to their own tickets, only agents resolve or reopen on behalf
//! of others, a closed ticket takes no messages, and every size is bounded.
//!
//! Append-only format: tickets, their messages and statuses are stored in RocksDB and
//! in snapshots with the codec's positional encoding, and later releases read them
//! back. A new enum variant goes at the end of its enum; any other change to these
//! types (a field added, even at the end, removed, reordered or retyped; a variant
//! inserted or moved) needs a new store format version (`store::FORMAT_VERSION`) with a
//! migration. `tests/golden.rs` checks their bytes.

use crate::event::Event;
use crate::ids::{Millis, UserId};
use crate::ledger::Ledger;
use crate::limits::LimitName;
use crate::outcome::{Applied, Rejection};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A ticket, derived from the log index of the command that opened it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TicketId(pub u64);

impl fmt::Display for TicketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "k{}", self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TicketStatus {
    /// Waiting for an agent.
    Open,
    /// An agent answered; waiting for the customer.
    AwaitingCustomer,
    /// An agent considers it solved; the customer may still write, which reopens it.
    Resolved,
    /// Final: no more messages.
    Closed,
}

impl TicketStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TicketStatus::Open => "open",
            TicketStatus::AwaitingCustomer => "awaiting_customer",
            TicketStatus::Resolved => "resolved",
            TicketStatus::Closed => "closed",
        }
    }

    pub fn parse(text: &str) -> Option<TicketStatus> {
        [
            TicketStatus::Open,
            TicketStatus::AwaitingCustomer,
            TicketStatus::Resolved,
            TicketStatus::Closed,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketMessage {
    pub author: UserId,
    /// Written by a support agent (role admin or support), not the customer.
    pub from_agent: bool,
    pub body: String,
    pub at_ms: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub id: TicketId,
    pub customer: UserId,
    /// The booking's external id (`city-number`); the api checked it is the customer's.
    pub booking: String,
    pub subject: String,
    pub status: TicketStatus,
    /// The last agent who wrote or changed the status.
    pub agent: Option<UserId>,
    pub messages: Vec<TicketMessage>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// Who is acting on a ticket, as the api established it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub user: UserId,
    pub agent: bool,
}

impl Ledger {
    fn check_message(&self, body: &str) -> Result<(), Rejection> {
        if body.trim().is_empty() {
            return Err(Rejection::invalid("body", "write a message"));
        }
        if body
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Err(Rejection::invalid(
                "body",
                "must not contain control characters other than newlines and tabs",
            ));
        }
        self.check_limit(
            LimitName::TicketMessageBytes,
            self.limits.ticket_message_bytes_max.into(),
            body.len() as u64,
        )
    }

    pub(crate) fn open_ticket(
        &mut self,
        id: TicketId,
        customer: UserId,
        booking: &str,
        subject: &str,
        body: &str,
        events: &mut Vec<Event>,
    ) -> Result<Applied, Rejection> {
        self.check_text("booking_id", booking, false)?;
        self.check_text("subject", subject, false)?;
        self.check_message(body)?;
        let open = self
            .indexes
            .customer_tickets
            .range((customer, TicketId(0))..=(customer, TicketId(u64::MAX)))
            .filter(|(_, ticket)| self.state.tickets[ticket].status != TicketStatus::Closed)
            .count() as u64;
        self.check_limit(
            LimitName::OpenTicketsPerCustomer,
            self.limits.open_tickets_per_customer_max.into(),
            open + 1,
        )?;
        let clock = self.state.clock;
        let ticket = Ticket {
            id,
            customer,
            booking: booking.to_owned(),
            subject: subject.to_owned(),
            status: TicketStatus::Open,
            agent: None,
            messages: vec![TicketMessage {
                author: customer,
                from_agent: false,
                body: body.to_owned(),
                at_ms: clock,
            }],
            created_at: clock,
            updated_at: clock,
        };
        self.indexes.customer_tickets.insert((customer, id));
        self.state.tickets.insert(id, ticket);
        self.touch_ticket(id);
        events.push(Event::TicketOpened {
            ticket: id,
            customer,
        });
        Ok(Applied::TicketOpened { ticket: id })
    }

    fn ticket_for(&self, id: TicketId, actor: Actor) -> Result<&Ticket, Rejection> {
        let ticket = self
            .state
            .tickets
            .get(&id)
            .ok_or(Rejection::UnknownTicket { ticket: id })?;
        if !actor.agent && ticket.customer != actor.user {
            // Another customer's ticket is reported as absent.
            return Err(Rejection::UnknownTicket { ticket: id });
        }
        Ok(ticket)
    }

    pub(crate) fn post_ticket_message(
        &mut self,
        id: TicketId,
        actor: Actor,
        body: &str,
        events: &mut Vec<Event>,
    ) -> Result<Applied, Rejection> {
        self.check_message(body)?;
        let ticket = self.ticket_for(id, actor)?;
        if ticket.status == TicketStatus::Closed {
            return Err(Rejection::TicketClosed { ticket: id });
        }
        self.check_limit(
            LimitName::TicketMessages,
            self.limits.ticket_messages_max.into(),
            ticket.messages.len() as u64 + 1,
        )?;
        let clock = self.state.clock;
        let status = if actor.agent {
            TicketStatus::AwaitingCustomer
        } else {
            TicketStatus::Open
        };
        if let Some(ticket) = self.state.tickets.get_mut(&id) {
            ticket.messages.push(TicketMessage {
                author: actor.user,
                from_agent: actor.agent,
                body: body.to_owned(),
                at_ms: clock,
            });
            ticket.status = status;
            if actor.agent {
                ticket.agent = Some(actor.user);
            }
            ticket.updated_at = clock;
        }
        self.touch_ticket(id);
        events.push(Event::TicketMessagePosted {
            ticket: id,
            author: actor.user,
            from_agent: actor.agent,
        });
        Ok(Applied::TicketUpdated { ticket: id, status })
    }

    /// Agents may set any status; a customer may only close their own ticket.
    pub(crate) fn set_ticket_status(
        &mut self,
        id: TicketId,
        actor: Actor,
        status: TicketStatus,
        events: &mut Vec<Event>,
    ) -> Result<Applied, Rejection> {
        let ticket = self.ticket_for(id, actor)?;
        if !actor.agent && status != TicketStatus::Closed {
            return Err(Rejection::invalid(
                "status",
                "a customer may only close a ticket; write a message to reopen it",
            ));
        }
        if ticket.status == TicketStatus::Closed {
            return Err(Rejection::TicketClosed { ticket: id });
        }
        let clock = self.state.clock;
        if let Some(ticket) = self.state.tickets.get_mut(&id) {
            ticket.status = status;
            if actor.agent {
                ticket.agent = Some(actor.user);
            }
            ticket.updated_at = clock;
        }
        self.touch_ticket(id);
        events.push(Event::TicketStatusChanged { ticket: id, status });
        Ok(Applied::TicketUpdated { ticket: id, status })
    }

    fn touch_ticket(&mut self, id: TicketId) {
        if let Some(changes) = self.changes.as_mut() {
            changes.tickets.insert(id);
        }
    }

    /// Tickets newest first: a customer's own, or (for agents, `customer: None`) all;
    /// optionally only those in `status`. `before` is the cursor.
    pub(crate) fn tickets(
        &self,
        customer: Option<UserId>,
        status: Option<TicketStatus>,
        before: Option<TicketId>,
        limit: usize,
    ) -> (Vec<Ticket>, Option<TicketId>) {
        let high = before.unwrap_or(TicketId(u64::MAX));
        let ids: Box<dyn Iterator<Item = TicketId> + '_> = match customer {
            Some(customer) => Box::new(
                self.indexes
                    .customer_tickets
                    .range((customer, TicketId(0))..(customer, high))
                    .rev()
                    .map(|(_, id)| *id),
            ),
            None => Box::new(self.state.tickets.range(..high).rev().map(|(id, _)| *id)),
        };
        let mut items: Vec<Ticket> = ids
            .map(|id| &self.state.tickets[&id])
            .filter(|ticket| status.is_none_or(|status| ticket.status == status))
            .take(limit + 1)
            .cloned()
            .collect();
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|ticket| ticket.id)
        } else {
            None
        };
        (items, next)
    }

    /// The ticket invariants: the customer index matches the tickets, messages are
    /// bounded, the first message is the customer's.
    pub(crate) fn check_ticket_invariants(&self) -> Result<(), String> {
        if self.indexes.customer_tickets.len() != self.state.tickets.len() {
            return Err("ticket index disagrees with the ticket table".into());
        }
        for ticket in self.state.tickets.values() {
            if !self
                .indexes
                .customer_tickets
                .contains(&(ticket.customer, ticket.id))
            {
                return Err(format!("ticket index misses {}", ticket.id));
            }
            if ticket.messages.len() > self.limits.ticket_messages_max as usize {
                return Err(format!("{} has more messages than allowed", ticket.id));
            }
            let first = ticket.messages.first();
            if first.is_none_or(|m| m.author != ticket.customer || m.from_agent) {
                return Err(format!(
                    "{} does not start with its customer's message",
                    ticket.id
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, CommandKind};
    use crate::limits::Limits;
    use crate::outcome::Outcome;

    fn run(ledger: &mut Ledger, index: u64, kind: CommandKind) -> Outcome {
        let command = Command {
            request_id: None,
            at_ms: 1_000 + index,
            kind,
        };
        let result = ledger.apply(index, &command);
        ledger.check_invariants().unwrap();
        result.outcome
    }

    fn open(customer: u64) -> CommandKind {
        CommandKind::OpenTicket {
            customer: UserId(customer),
            booking: "mumbai-7".into(),
            subject: "Refund".into(),
            body: "My show was cancelled".into(),
        }
    }

    #[test]
    fn a_ticket_goes_between_customer_and_agent_and_closes() {
        let mut ledger = Ledger::new(Limits::default());
        assert_eq!(
            run(&mut ledger, 1, open(5)),
            Outcome::Applied(Applied::TicketOpened {
                ticket: TicketId(1)
            })
        );
        let agent = Actor {
            user: UserId(99),
            agent: true,
        };
        let customer = Actor {
            user: UserId(5),
            agent: false,
        };
        let stranger = Actor {
            user: UserId(6),
            agent: false,
        };
        let reply = |actor: Actor, body: &str| CommandKind::PostTicketMessage {
            ticket: TicketId(1),
            actor,
            body: body.into(),
        };
        assert!(run(&mut ledger, 2, reply(agent, "Refund is on its way")).is_applied());
        assert_eq!(
            ledger.state.tickets[&TicketId(1)].status,
            TicketStatus::AwaitingCustomer
        );
        assert_eq!(
            run(&mut ledger, 3, reply(stranger, "let me in")),
            Outcome::Rejected(Rejection::UnknownTicket {
                ticket: TicketId(1)
            })
        );
        assert!(run(&mut ledger, 4, reply(customer, "Thanks")).is_applied());
        assert_eq!(
            ledger.state.tickets[&TicketId(1)].status,
            TicketStatus::Open
        );
        let set = |actor: Actor, status| CommandKind::SetTicketStatus {
            ticket: TicketId(1),
            actor,
            status,
        };
        assert!(matches!(
            run(&mut ledger, 5, set(customer, TicketStatus::Resolved)),
            Outcome::Rejected(rejection) if rejection.is_invalid("status")
        ));
        assert!(run(&mut ledger, 7, set(agent, TicketStatus::Resolved)).is_applied());
        assert!(run(&mut ledger, 8, set(customer, TicketStatus::Closed)).is_applied());
        assert_eq!(
            run(&mut ledger, 9, reply(agent, "one more thing")),
            Outcome::Rejected(Rejection::TicketClosed {
                ticket: TicketId(1)
            })
        );
        let ticket = &ledger.state.tickets[&TicketId(1)];
        assert_eq!(ticket.messages.len(), 3);
        assert_eq!(ticket.agent, Some(UserId(99)));
    }

    #[test]
    fn customers_list_only_their_tickets_and_limits_hold() {
        let limits = Limits {
            ticket_messages_max: 2,
            open_tickets_per_customer_max: 2,
            ..Limits::default()
        };
        let mut ledger = Ledger::new(limits);
        for (index, customer) in [(1, 5), (2, 6), (3, 5)] {
            assert!(run(&mut ledger, index, open(customer)).is_applied());
        }
        assert!(matches!(
            run(&mut ledger, 4, open(5)),
            Outcome::Rejected(Rejection::LimitExceeded {
                limit: LimitName::OpenTicketsPerCustomer,
                ..
            })
        ));
        let (mine, next) = ledger.tickets(Some(UserId(5)), None, None, 10);
        assert_eq!(
            mine.iter().map(|t| t.id).collect::<Vec<_>>(),
            [TicketId(3), TicketId(1)]
        );
        assert_eq!(next, None);
        let (all, next) = ledger.tickets(None, None, None, 2);
        assert_eq!(all.len(), 2);
        assert_eq!(next, Some(TicketId(2)));
        let actor = Actor {
            user: UserId(5),
            agent: false,
        };
        let post = CommandKind::PostTicketMessage {
            ticket: TicketId(1),
            actor,
            body: "second".into(),
        };
        assert!(run(&mut ledger, 5, post.clone()).is_applied());
        assert!(matches!(
            run(&mut ledger, 6, post),
            Outcome::Rejected(Rejection::LimitExceeded {
                limit: LimitName::TicketMessages,
                ..
            })
        ));
        let empty = CommandKind::PostTicketMessage {
            ticket: TicketId(3),
            actor,
            body: "  ".into(),
        };
        assert!(run(&mut ledger, 7, empty).is_invalid_body());
    }

    trait InvalidBody {
        fn is_invalid_body(&self) -> bool;
    }

    impl InvalidBody for Outcome {
        fn is_invalid_body(&self) -> bool {
            matches!(self, Outcome::Rejected(rejection) if rejection.is_invalid("body"))
        }
    }
}
