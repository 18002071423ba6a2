//! Orders: a draft a user fills with products, then places, and that is confirmed once
//! stock and payment are secured, or cancelled. Names and prices are snapshotted when an
//! item is added, so later catalogue changes never alter an order.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{domain_event, Aggregate};
use crate::{text, Currency, DomainError, Money, MoneyError, Name};

/// Most units of one product a single order may hold.
pub const MAX_LINE_QUANTITY: u32 = 10_000;
/// Most distinct products in one order.
pub const MAX_LINES: usize = 100;

/// Where an order is in its life; confirmed and cancelled are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Draft,
    Placed,
    Confirmed,
    Cancelled,
}

impl OrderStatus {
    /// The name used in JSON and messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Placed => "placed",
            Self::Confirmed => "confirmed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Closed orders are history: no command changes them any more.
    pub const fn is_closed(self) -> bool {
        matches!(self, Self::Confirmed | Self::Cancelled)
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One product in an order, with the name and unit price it had when it was added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderLine {
    pub product_id: Uuid,
    pub product_name: String,
    pub unit_price: Money,
    pub quantity: u32,
}

impl OrderLine {
    /// Unit price times quantity, refusing to overflow.
    pub fn total(&self) -> Result<Money, MoneyError> {
        self.unit_price.checked_mul(self.quantity)
    }
}

/// What can be asked of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderCommand {
    Create {
        user_id: Uuid,
        currency: Currency,
    },
    /// `product_name` and `unit_price` are looked up by the caller and snapshotted; adding a
    /// product already in the order adds to its quantity at the price first snapshotted.
    AddItem {
        product_id: Uuid,
        product_name: String,
        unit_price: Money,
        quantity: u32,
    },
    /// Sets the absolute quantity; dropping a product is [`OrderCommand::RemoveItem`].
    UpdateQuantity {
        product_id: Uuid,
        quantity: u32,
    },
    RemoveItem {
        product_id: Uuid,
    },
    Place,
    Confirm,
    Cancel {
        reason: String,
    },
}

domain_event! {
    /// What happened to an order.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum OrderEvent {
        OrderCreated {
            user_id: Uuid,
            currency: Currency,
        },
        ItemAdded {
            product_id: Uuid,
            product_name: String,
            unit_price: Money,
            quantity: u32,
        },
        /// `quantity` is the new absolute quantity.
        QuantityUpdated {
            product_id: Uuid,
            previous_quantity: u32,
            quantity: u32,
        },
        ItemRemoved {
            product_id: Uuid,
        },
        /// Carries the lines so the fulfilment saga needs nothing but this event.
        OrderPlaced {
            total: Money,
            lines: Vec<OrderLine>,
        },
        OrderConfirmed {},
        OrderCancelled {
            reason: String,
        },
    }
}

/// An order's current state; empty until created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Order {
    head: Option<Head>,
    lines: Vec<OrderLine>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    user_id: Uuid,
    currency: Currency,
    status: OrderStatus,
}

impl Order {
    /// Whether the stream has been created, i.e. anything else may be asked of it.
    pub fn exists(&self) -> bool {
        self.head.is_some()
    }

    /// `None` before creation.
    pub fn status(&self) -> Option<OrderStatus> {
        self.head.map(|head| head.status)
    }

    /// Who the order belongs to; `None` before creation.
    pub fn user_id(&self) -> Option<Uuid> {
        self.head.map(|head| head.user_id)
    }

    /// Every price in the order is in this currency; `None` before creation.
    pub fn currency(&self) -> Option<Currency> {
        self.head.map(|head| head.currency)
    }

    /// In the order products were first added.
    pub fn lines(&self) -> &[OrderLine] {
        &self.lines
    }

    /// The line for `product_id`, if the product is in the order.
    pub fn line(&self, product_id: Uuid) -> Option<&OrderLine> {
        self.lines.iter().find(|line| line.product_id == product_id)
    }

    /// Sum of all line totals; zero for an empty order.
    pub fn total(&self) -> Result<Money, DomainError> {
        total_of(self.head()?.currency, &self.lines)
    }

    fn head(&self) -> Result<Head, DomainError> {
        self.head.ok_or(DomainError::NotFound {
            stream_type: Self::STREAM_TYPE,
        })
    }

    fn open(&self) -> Result<Head, DomainError> {
        let head = self.head()?;
        if head.status.is_closed() {
            return Err(DomainError::OrderClosed {
                status: head.status,
            });
        }
        Ok(head)
    }

    fn draft(&self) -> Result<Head, DomainError> {
        let head = self.open()?;
        match head.status {
            OrderStatus::Draft => Ok(head),
            status => Err(DomainError::OrderNotDraft { status }),
        }
    }

    /// Keeps every draft's total representable, so placing never fails on arithmetic.
    fn ensure_total_fits(&self, changed: &OrderLine) -> Result<(), DomainError> {
        let others = self
            .lines
            .iter()
            .filter(|line| line.product_id != changed.product_id);
        total_of(changed.unit_price.currency, others)?.checked_add(changed.total()?)?;
        Ok(())
    }

    fn add_item(
        &self,
        product_id: Uuid,
        product_name: String,
        unit_price: Money,
        quantity: u32,
    ) -> Result<OrderEvent, DomainError> {
        let head = self.draft()?;
        line_quantity(quantity.into())?;
        unit_price.ensure_currency(head.currency)?;
        if unit_price.is_negative() {
            return Err(DomainError::PriceNegative { price: unit_price });
        }
        if let Some(line) = self.line(product_id) {
            let summed = line_quantity(u64::from(line.quantity) + u64::from(quantity))?;
            return self.update(line, summed);
        }
        if self.lines.len() >= MAX_LINES {
            return Err(DomainError::TooManyLines { max: MAX_LINES });
        }
        let line = OrderLine {
            product_id,
            product_name: Name::parse(&product_name)?.into(),
            unit_price,
            quantity,
        };
        self.ensure_total_fits(&line)?;
        Ok(OrderEvent::ItemAdded {
            product_id,
            product_name: line.product_name,
            unit_price,
            quantity,
        })
    }

    fn update(&self, line: &OrderLine, quantity: u32) -> Result<OrderEvent, DomainError> {
        self.ensure_total_fits(&OrderLine {
            quantity,
            ..line.clone()
        })?;
        Ok(OrderEvent::QuantityUpdated {
            product_id: line.product_id,
            previous_quantity: line.quantity,
            quantity,
        })
    }

    fn set_status(&mut self, status: OrderStatus) {
        if let Some(head) = &mut self.head {
            head.status = status;
        }
    }
}

/// `quantity` as a line quantity, if within 1..=[`MAX_LINE_QUANTITY`].
fn line_quantity(quantity: u64) -> Result<u32, DomainError> {
    u32::try_from(quantity)
        .ok()
        .filter(|quantity| (1..=MAX_LINE_QUANTITY).contains(quantity))
        .ok_or(DomainError::QuantityOutOfRange {
            quantity,
            max: MAX_LINE_QUANTITY.into(),
        })
}

fn total_of<'a>(
    currency: Currency,
    lines: impl IntoIterator<Item = &'a OrderLine>,
) -> Result<Money, DomainError> {
    lines
        .into_iter()
        .try_fold(Money::zero(currency), |sum, line| {
            Ok(sum.checked_add(line.total()?)?)
        })
}

impl Aggregate for Order {
    const STREAM_TYPE: &'static str = "order";
    type Command = OrderCommand;
    type Event = OrderEvent;

    fn handle(&self, command: OrderCommand) -> Result<Vec<OrderEvent>, DomainError> {
        let event = match command {
            OrderCommand::Create { user_id, currency } => {
                if self.exists() {
                    return Err(DomainError::AlreadyExists {
                        stream_type: Self::STREAM_TYPE,
                    });
                }
                OrderEvent::OrderCreated { user_id, currency }
            }
            OrderCommand::AddItem {
                product_id,
                product_name,
                unit_price,
                quantity,
            } => self.add_item(product_id, product_name, unit_price, quantity)?,
            OrderCommand::UpdateQuantity {
                product_id,
                quantity,
            } => {
                self.draft()?;
                if quantity == 0 {
                    return Err(DomainError::QuantityZero);
                }
                line_quantity(quantity.into())?;
                let line = self
                    .line(product_id)
                    .ok_or(DomainError::ItemNotInOrder { product_id })?;
                if line.quantity == quantity {
                    return Ok(vec![]);
                }
                self.update(line, quantity)?
            }
            OrderCommand::RemoveItem { product_id } => {
                self.draft()?;
                self.line(product_id)
                    .ok_or(DomainError::ItemNotInOrder { product_id })?;
                OrderEvent::ItemRemoved { product_id }
            }
            OrderCommand::Place => {
                let head = self.draft()?;
                if self.lines.is_empty() {
                    return Err(DomainError::OrderEmpty);
                }
                OrderEvent::OrderPlaced {
                    total: total_of(head.currency, &self.lines)?,
                    lines: self.lines.clone(),
                }
            }
            OrderCommand::Confirm => match self.open()?.status {
                OrderStatus::Placed => OrderEvent::OrderConfirmed {},
                _ => return Err(DomainError::OrderNotPlaced),
            },
            OrderCommand::Cancel { reason } => {
                self.open()?;
                OrderEvent::OrderCancelled {
                    reason: text::reason(&reason)?,
                }
            }
        };
        Ok(vec![event])
    }

    fn apply(&mut self, event: &OrderEvent) {
        match event {
            OrderEvent::OrderCreated { user_id, currency } => {
                self.head = Some(Head {
                    user_id: *user_id,
                    currency: *currency,
                    status: OrderStatus::Draft,
                });
            }
            OrderEvent::ItemAdded {
                product_id,
                product_name,
                unit_price,
                quantity,
            } => self.lines.push(OrderLine {
                product_id: *product_id,
                product_name: product_name.clone(),
                unit_price: *unit_price,
                quantity: *quantity,
            }),
            OrderEvent::QuantityUpdated {
                product_id,
                quantity,
                ..
            } => {
                if let Some(line) = self.lines.iter_mut().find(|l| l.product_id == *product_id) {
                    line.quantity = *quantity;
                }
            }
            OrderEvent::ItemRemoved { product_id } => {
                self.lines.retain(|line| line.product_id != *product_id);
            }
            OrderEvent::OrderPlaced { .. } => self.set_status(OrderStatus::Placed),
            OrderEvent::OrderConfirmed {} => self.set_status(OrderStatus::Confirmed),
            OrderEvent::OrderCancelled { .. } => self.set_status(OrderStatus::Cancelled),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::{assert_round_trip, given};
    use crate::{DecodeError, DomainEvent};

    const USER: Uuid = Uuid::from_u128(7);
    const MUG: Uuid = Uuid::from_u128(1);
    const TEA: Uuid = Uuid::from_u128(2);

    fn eur(amount_minor: i64) -> Money {
        Money::new(amount_minor, Currency::EUR)
    }

    fn created() -> OrderEvent {
        OrderEvent::OrderCreated {
            user_id: USER,
            currency: Currency::EUR,
        }
    }

    fn added(product_id: Uuid, unit_price: Money, quantity: u32) -> OrderEvent {
        OrderEvent::ItemAdded {
            product_id,
            product_name: "Coffee mug".into(),
            unit_price,
            quantity,
        }
    }

    fn add(product_id: Uuid, unit_price: Money, quantity: u32) -> OrderCommand {
        OrderCommand::AddItem {
            product_id,
            product_name: "Coffee mug".into(),
            unit_price,
            quantity,
        }
    }

    fn line(product_id: Uuid, unit_price: Money, quantity: u32) -> OrderLine {
        OrderLine {
            product_id,
            product_name: "Coffee mug".into(),
            unit_price,
            quantity,
        }
    }

    fn placed() -> OrderEvent {
        OrderEvent::OrderPlaced {
            total: eur(2000),
            lines: vec![line(MUG, eur(1000), 2)],
        }
    }

    fn cancelled() -> OrderEvent {
        OrderEvent::OrderCancelled {
            reason: "changed my mind".into(),
        }
    }

    fn draft() -> Vec<OrderEvent> {
        vec![created(), added(MUG, eur(1000), 2)]
    }

    fn with(
        mut history: Vec<OrderEvent>,
        more: impl IntoIterator<Item = OrderEvent>,
    ) -> Vec<OrderEvent> {
        history.extend(more);
        history
    }

    /// A history in each closed status.
    fn closed() -> [Vec<OrderEvent>; 2] {
        [
            with(draft(), [placed(), OrderEvent::OrderConfirmed {}]),
            with(draft(), [cancelled()]),
        ]
    }

    fn update(product_id: Uuid, quantity: u32) -> OrderCommand {
        OrderCommand::UpdateQuantity {
            product_id,
            quantity,
        }
    }

    fn cancel(reason: &str) -> OrderCommand {
        OrderCommand::Cancel {
            reason: reason.into(),
        }
    }

    #[test]
    fn creating_an_order_starts_an_empty_draft() {
        let order = given::<Order>(vec![])
            .when(OrderCommand::Create {
                user_id: USER,
                currency: Currency::EUR,
            })
            .then_expect(vec![created()]);
        assert!(order.exists());
        assert_eq!(order.status(), Some(OrderStatus::Draft));
        assert_eq!(order.user_id(), Some(USER));
        assert_eq!(order.currency(), Some(Currency::EUR));
        assert_eq!(order.lines(), []);
        assert_eq!(order.total(), Ok(eur(0)));
    }

    #[test]
    fn creating_an_existing_order_is_rejected() {
        given::<Order>(vec![created()])
            .when(OrderCommand::Create {
                user_id: USER,
                currency: Currency::USD,
            })
            .then_error("ALREADY_EXISTS");
    }

    #[test]
    fn a_missing_order_has_no_state_and_no_total() {
        let order = Order::default();
        assert!(!order.exists());
        assert_eq!(
            (order.status(), order.user_id(), order.currency()),
            (None, None, None)
        );
        assert_eq!(order.total().unwrap_err().code(), "NOT_FOUND");
    }

    #[test]
    fn adding_an_item_snapshots_its_name_and_price() {
        let order = given::<Order>(vec![created()])
            .when(OrderCommand::AddItem {
                product_id: MUG,
                product_name: " Coffee mug ".into(),
                unit_price: eur(1000),
                quantity: 2,
            })
            .then_expect(vec![added(MUG, eur(1000), 2)]);
        assert_eq!(order.lines(), [line(MUG, eur(1000), 2)]);
        assert_eq!(order.total(), Ok(eur(2000)));
    }

    #[test]
    fn adding_a_product_already_in_the_order_sums_the_quantities() {
        let order = given::<Order>(draft())
            .when(add(MUG, eur(1200), 3))
            .then_expect(vec![OrderEvent::QuantityUpdated {
                product_id: MUG,
                previous_quantity: 2,
                quantity: 5,
            }]);
        assert_eq!(order.lines(), [line(MUG, eur(1000), 5)]);
    }

    #[test]
    fn adding_beyond_10000_units_of_one_product_is_rejected() {
        given::<Order>(draft())
            .when(add(MUG, eur(1000), MAX_LINE_QUANTITY - 1))
            .then_error("QUANTITY_OUT_OF_RANGE");
        given::<Order>(draft())
            .when(add(MUG, eur(1000), u32::MAX))
            .then_error("QUANTITY_OUT_OF_RANGE");
    }

    #[test]
    fn adding_zero_units_is_rejected() {
        given::<Order>(vec![created()])
            .when(add(MUG, eur(1000), 0))
            .then_error("QUANTITY_OUT_OF_RANGE");
    }

    #[test]
    fn adding_more_than_10000_units_is_rejected() {
        given::<Order>(vec![created()])
            .when(add(MUG, eur(1000), MAX_LINE_QUANTITY + 1))
            .then_error("QUANTITY_OUT_OF_RANGE");
    }

    #[test]
    fn adding_exactly_10000_units_is_allowed() {
        given::<Order>(vec![created()])
            .when(add(MUG, eur(1000), MAX_LINE_QUANTITY))
            .then_expect(vec![added(MUG, eur(1000), MAX_LINE_QUANTITY)]);
    }

    #[test]
    fn adding_an_item_priced_in_another_currency_is_rejected() {
        given::<Order>(vec![created()])
            .when(add(MUG, Money::new(1000, Currency::USD), 1))
            .then_error("CURRENCY_MISMATCH");
    }

    #[test]
    fn adding_an_item_with_a_negative_price_is_rejected() {
        given::<Order>(vec![created()])
            .when(add(MUG, eur(-1), 1))
            .then_error("PRICE_NEGATIVE");
    }

    #[test]
    fn adding_an_item_without_a_name_is_rejected() {
        given::<Order>(vec![created()])
            .when(OrderCommand::AddItem {
                product_id: MUG,
                product_name: "  ".into(),
                unit_price: eur(1),
                quantity: 1,
            })
            .then_error("INVALID_NAME");
    }

    #[test]
    fn adding_a_101st_product_is_rejected_but_more_of_a_listed_one_is_not() {
        let full: Vec<_> = std::iter::once(created())
            .chain((0..MAX_LINES as u128).map(|i| added(Uuid::from_u128(100 + i), eur(1), 1)))
            .collect();
        given::<Order>(full.clone())
            .when(add(MUG, eur(1), 1))
            .then_error("TOO_MANY_LINES");
        given::<Order>(full)
            .when(add(Uuid::from_u128(100), eur(1), 1))
            .then_expect(vec![OrderEvent::QuantityUpdated {
                product_id: Uuid::from_u128(100),
                previous_quantity: 1,
                quantity: 2,
            }]);
    }

    #[test]
    fn adding_an_item_whose_line_total_overflows_is_rejected() {
        given::<Order>(vec![created()])
            .when(add(MUG, eur(i64::MAX), 2))
            .then_error("MONEY_OVERFLOW");
    }

    #[test]
    fn adding_an_item_that_overflows_the_order_total_is_rejected() {
        given::<Order>(vec![created(), added(MUG, eur(i64::MAX), 1)])
            .when(add(TEA, eur(1), 1))
            .then_error("MONEY_OVERFLOW");
    }

    #[test]
    fn adding_to_a_placed_order_is_rejected() {
        given::<Order>(with(draft(), [placed()]))
            .when(add(TEA, eur(1), 1))
            .then_error("ORDER_NOT_DRAFT");
    }

    #[test]
    fn adding_to_a_closed_order_is_rejected() {
        for history in closed() {
            given::<Order>(history)
                .when(add(TEA, eur(1), 1))
                .then_error("ORDER_CLOSED");
        }
    }

    #[test]
    fn adding_to_a_missing_order_is_not_found() {
        given::<Order>(vec![])
            .when(add(MUG, eur(1), 1))
            .then_error("NOT_FOUND");
    }

    #[test]
    fn updating_a_quantity_records_the_old_and_new_quantity() {
        let order = given::<Order>(draft())
            .when(update(MUG, 7))
            .then_expect(vec![OrderEvent::QuantityUpdated {
                product_id: MUG,
                previous_quantity: 2,
                quantity: 7,
            }]);
        assert_eq!(order.total(), Ok(eur(7000)));
    }

    #[test]
    fn updating_to_the_current_quantity_records_nothing() {
        given::<Order>(draft())
            .when(update(MUG, 2))
            .then_expect(vec![]);
    }

    #[test]
    fn updating_to_zero_is_rejected_in_favour_of_removing() {
        given::<Order>(draft())
            .when(update(MUG, 0))
            .then_error("QUANTITY_OUT_OF_RANGE");
        assert!(DomainError::QuantityZero.to_string().contains("remove"));
    }

    #[test]
    fn updating_to_more_than_10000_is_rejected() {
        given::<Order>(draft())
            .when(update(MUG, MAX_LINE_QUANTITY + 1))
            .then_error("QUANTITY_OUT_OF_RANGE");
    }

    #[test]
    fn updating_a_product_not_in_the_order_is_rejected() {
        given::<Order>(draft())
            .when(update(TEA, 1))
            .then_error("ITEM_NOT_IN_ORDER");
    }

    #[test]
    fn updating_to_a_quantity_whose_total_overflows_is_rejected() {
        given::<Order>(vec![created(), added(MUG, eur(i64::MAX), 1)])
            .when(update(MUG, 2))
            .then_error("MONEY_OVERFLOW");
    }

    #[test]
    fn updating_a_placed_order_is_rejected() {
        given::<Order>(with(draft(), [placed()]))
            .when(update(MUG, 1))
            .then_error("ORDER_NOT_DRAFT");
    }

    #[test]
    fn updating_a_closed_order_is_rejected() {
        for history in closed() {
            given::<Order>(history)
                .when(update(MUG, 1))
                .then_error("ORDER_CLOSED");
        }
    }

    #[test]
    fn updating_a_missing_order_is_not_found() {
        given::<Order>(vec![])
            .when(update(MUG, 1))
            .then_error("NOT_FOUND");
    }

    #[test]
    fn removing_an_item_drops_its_line() {
        let order = given::<Order>(with(draft(), [added(TEA, eur(300), 1)]))
            .when(OrderCommand::RemoveItem { product_id: MUG })
            .then_expect(vec![OrderEvent::ItemRemoved { product_id: MUG }]);
        assert_eq!(order.lines(), [line(TEA, eur(300), 1)]);
        assert_eq!(order.total(), Ok(eur(300)));
    }

    #[test]
    fn removing_a_product_not_in_the_order_is_rejected() {
        given::<Order>(draft())
            .when(OrderCommand::RemoveItem { product_id: TEA })
            .then_error("ITEM_NOT_IN_ORDER");
    }

    #[test]
    fn removing_from_a_placed_order_is_rejected() {
        given::<Order>(with(draft(), [placed()]))
            .when(OrderCommand::RemoveItem { product_id: MUG })
            .then_error("ORDER_NOT_DRAFT");
    }

    #[test]
    fn removing_from_a_closed_order_is_rejected() {
        for history in closed() {
            given::<Order>(history)
                .when(OrderCommand::RemoveItem { product_id: MUG })
                .then_error("ORDER_CLOSED");
        }
    }

    #[test]
    fn removing_from_a_missing_order_is_not_found() {
        given::<Order>(vec![])
            .when(OrderCommand::RemoveItem { product_id: MUG })
            .then_error("NOT_FOUND");
    }

    #[test]
    fn placing_records_the_total_and_a_snapshot_of_the_lines() {
        let order = given::<Order>(with(draft(), [added(TEA, eur(350), 3)]))
            .when(OrderCommand::Place)
            .then_expect(vec![OrderEvent::OrderPlaced {
                total: eur(3050),
                lines: vec![line(MUG, eur(1000), 2), line(TEA, eur(350), 3)],
            }]);
        assert_eq!(order.status(), Some(OrderStatus::Placed));
    }

    #[test]
    fn placing_an_empty_order_is_rejected() {
        given::<Order>(vec![created()])
            .when(OrderCommand::Place)
            .then_error("ORDER_EMPTY");
        let emptied = with(draft(), [OrderEvent::ItemRemoved { product_id: MUG }]);
        given::<Order>(emptied)
            .when(OrderCommand::Place)
            .then_error("ORDER_EMPTY");
    }

    #[test]
    fn placing_an_order_whose_total_overflows_is_rejected() {
        let history = vec![
            created(),
            added(MUG, eur(i64::MAX), 1),
            added(TEA, eur(i64::MAX), 1),
        ];
        given::<Order>(history)
            .when(OrderCommand::Place)
            .then_error("MONEY_OVERFLOW");
    }

    #[test]
    fn placing_twice_is_rejected() {
        given::<Order>(with(draft(), [placed()]))
            .when(OrderCommand::Place)
            .then_error("ORDER_NOT_DRAFT");
    }

    #[test]
    fn placing_a_closed_order_is_rejected() {
        for history in closed() {
            given::<Order>(history)
                .when(OrderCommand::Place)
                .then_error("ORDER_CLOSED");
        }
    }

    #[test]
    fn placing_a_missing_order_is_not_found() {
        given::<Order>(vec![])
            .when(OrderCommand::Place)
            .then_error("NOT_FOUND");
    }

    #[test]
    fn confirming_a_placed_order_closes_it() {
        let order = given::<Order>(with(draft(), [placed()]))
            .when(OrderCommand::Confirm)
            .then_expect(vec![OrderEvent::OrderConfirmed {}]);
        assert_eq!(order.status(), Some(OrderStatus::Confirmed));
    }

    #[test]
    fn confirming_a_draft_is_rejected() {
        given::<Order>(draft())
            .when(OrderCommand::Confirm)
            .then_error("ORDER_NOT_PLACED");
    }

    #[test]
    fn confirming_a_closed_order_is_rejected() {
        for history in closed() {
            given::<Order>(history)
                .when(OrderCommand::Confirm)
                .then_error("ORDER_CLOSED");
        }
    }

    #[test]
    fn confirming_a_missing_order_is_not_found() {
        given::<Order>(vec![])
            .when(OrderCommand::Confirm)
            .then_error("NOT_FOUND");
    }

    #[test]
    fn cancelling_a_draft_records_the_trimmed_reason() {
        let order = given::<Order>(draft())
            .when(cancel("  changed my mind "))
            .then_expect(vec![cancelled()]);
        assert_eq!(order.status(), Some(OrderStatus::Cancelled));
    }

    #[test]
    fn cancelling_a_placed_order_is_allowed() {
        given::<Order>(with(draft(), [placed()]))
            .when(cancel("changed my mind"))
            .then_expect(vec![cancelled()]);
    }

    #[test]
    fn cancelling_a_closed_order_is_rejected() {
        for history in closed() {
            given::<Order>(history)
                .when(cancel("too late"))
                .then_error("ORDER_CLOSED");
        }
    }

    #[test]
    fn cancelling_without_a_reason_is_rejected() {
        given::<Order>(draft())
            .when(cancel(" "))
            .then_error("INVALID_REASON");
    }

    #[test]
    fn cancelling_with_a_reason_over_500_characters_is_rejected() {
        given::<Order>(draft())
            .when(cancel(&"x".repeat(501)))
            .then_error("INVALID_REASON");
        given::<Order>(draft())
            .when(cancel(&"x".repeat(500)))
            .then_expect(vec![OrderEvent::OrderCancelled {
                reason: "x".repeat(500),
            }]);
    }

    #[test]
    fn cancelling_a_missing_order_is_not_found() {
        given::<Order>(vec![])
            .when(cancel("why"))
            .then_error("NOT_FOUND");
    }

    #[test]
    fn statuses_serialize_in_lowercase() {
        assert_eq!(
            serde_json::to_value(OrderStatus::Cancelled).unwrap(),
            json!("cancelled")
        );
        assert_eq!(OrderStatus::Draft.to_string(), "draft");
    }

    #[test]
    fn every_order_event_survives_storage_under_a_stable_name() {
        let events = [
            created(),
            added(MUG, eur(1000), 2),
            OrderEvent::QuantityUpdated {
                product_id: MUG,
                previous_quantity: 2,
                quantity: 3,
            },
            OrderEvent::ItemRemoved { product_id: MUG },
            placed(),
            OrderEvent::OrderConfirmed {},
            cancelled(),
        ];
        let names = [
            "OrderCreated",
            "ItemAdded",
            "QuantityUpdated",
            "ItemRemoved",
            "OrderPlaced",
            "OrderConfirmed",
            "OrderCancelled",
        ];
        assert_round_trip(&events, &names);
        assert_eq!(OrderEvent::EVENT_TYPES, names);
    }

    #[test]
    fn payloads_hold_only_the_event_s_fields_in_camel_case() {
        assert_eq!(
            created().to_payload(),
            json!({"userId": USER, "currency": "EUR"})
        );
        assert_eq!(
            placed().to_payload(),
            json!({
                "total": {"amountMinor": 2000, "currency": "EUR"},
                "lines": [{
                    "productId": MUG,
                    "productName": "Coffee mug",
                    "unitPrice": {"amountMinor": 1000, "currency": "EUR"},
                    "quantity": 2,
                }],
            })
        );
        assert_eq!(OrderEvent::OrderConfirmed {}.to_payload(), json!({}));
    }

    #[test]
    fn unknown_event_types_are_reported_as_such() {
        for version in [1, 2] {
            let error = OrderEvent::from_stored("OrderShipped", version, json!({})).unwrap_err();
            assert!(matches!(error, DecodeError::UnknownEventType(t) if t == "OrderShipped"));
        }
    }

    #[test]
    fn schema_versions_other_than_the_current_one_are_unsupported() {
        for version in [0, 2, -1] {
            let error = OrderEvent::from_stored("OrderConfirmed", version, json!({})).unwrap_err();
            assert!(
                matches!(&error, DecodeError::UnsupportedSchemaVersion { event_type, version: v }
                    if event_type == "OrderConfirmed" && *v == version),
                "{error:?}"
            );
        }
    }

    #[test]
    fn malformed_payloads_are_reported_with_their_cause() {
        let payloads = [
            json!({"userId": USER}),
            json!({"userId": "not a uuid", "currency": "EUR"}),
            json!({"userId": USER, "currency": "XYZ"}),
            json!([]),
        ];
        for payload in payloads {
            let error = OrderEvent::from_stored("OrderCreated", 1, payload).unwrap_err();
            assert!(matches!(error, DecodeError::Payload(_)), "{error:?}");
        }
    }
}
