//! Products: the catalogue entry and its stock. Orders reserve stock while they are open
//! and commit it when confirmed, so stock is never sold twice nor goes negative.

use std::collections::BTreeMap;

use uuid::Uuid;

use serde::{Deserialize, Serialize};

use crate::aggregate::{domain_event, Aggregate, Snapshot};
use crate::text::parsed_string;
use crate::{DomainError, Money, Name};

/// Longest SKU, in characters.
pub const MAX_SKU_LEN: usize = 64;

/// A stock keeping unit: 1 to 64 of A-Z, 0-9, '-', '_' and '.', trimmed and uppercased so
/// "mug-01" and "MUG-01 " claim the same unique SKU.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sku(String);

impl Sku {
    /// Normalizes `input` (trim, ASCII uppercase) and checks the result.
    pub fn parse(input: &str) -> Result<Self, DomainError> {
        let sku = input.trim().to_ascii_uppercase();
        let allowed = |b: u8| b.is_ascii_uppercase() || b.is_ascii_digit() || b"-_.".contains(&b);
        if (1..=MAX_SKU_LEN).contains(&sku.len()) && sku.bytes().all(allowed) {
            Ok(Self(sku))
        } else {
            Err(DomainError::InvalidSku { max: MAX_SKU_LEN })
        }
    }
}

parsed_string!(Sku);

/// What can be asked of a product; reservations are keyed by the order that holds them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProductCommand {
    Create {
        sku: Sku,
        name: Name,
        price: Money,
        initial_stock: u32,
    },
    ChangePrice {
        price: Money,
    },
    Restock {
        quantity: u32,
    },
    Reserve {
        order_id: Uuid,
        quantity: u32,
    },
    Release {
        order_id: Uuid,
    },
    CommitReservation {
        order_id: Uuid,
    },
}

domain_event! {
    /// What happened to a product; quantities on release and commit repeat the reserved amount
    /// so projections need no memory of the reservation.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum ProductEvent {
        ProductCreated {
            #[serde(deserialize_with = "Sku::deserialize_stored")]
            sku: Sku,
            #[serde(deserialize_with = "Name::deserialize_stored")]
            name: Name,
            price: Money,
            initial_stock: u32,
        },
        PriceChanged {
            previous_price: Money,
            price: Money,
        },
        Restocked {
            quantity: u32,
        },
        StockReserved {
            order_id: Uuid,
            quantity: u32,
        },
        ReservationReleased {
            order_id: Uuid,
            quantity: u32,
        },
        ReservationCommitted {
            order_id: Uuid,
            quantity: u32,
        },
    }
}

/// A product's catalogue entry and stock; empty until created.
///
/// Counters are `u64` although commands carry `u32`: stock only grows by events of at most
/// `u32::MAX` each, so the sums cannot overflow in practice.
///
/// Only open reservations are kept: the state stays the size of what is held now, however
/// long the stream grows, so its snapshot loads in constant time. After a release or a
/// commit the same order may reserve again; the fulfilment saga never asks twice for a
/// line (a repeat of its reserve command is answered from its command id, and a reserve
/// for a step the saga has left is not written).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    listing: Option<Listing>,
    on_hand: u64,
    reserved: u64,
    sold: u64,
    /// Open reservations: the quantity each order holds.
    reservations: BTreeMap<Uuid, u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Listing {
    #[serde(deserialize_with = "Sku::deserialize_stored")]
    sku: Sku,
    #[serde(deserialize_with = "Name::deserialize_stored")]
    name: Name,
    price: Money,
}

impl Snapshot for Product {
    const SNAPSHOT_FORMAT: i16 = 1;
}

impl Product {
    /// Whether the stream has been created, i.e. anything else may be asked of it.
    pub fn exists(&self) -> bool {
        self.listing.is_some()
    }

    /// The normalized SKU; `None` before creation.
    pub fn sku(&self) -> Option<&str> {
        self.listing.as_ref().map(|listing| listing.sku.as_str())
    }

    /// The name orders snapshot; `None` before creation.
    pub fn name(&self) -> Option<&str> {
        self.listing.as_ref().map(|listing| listing.name.as_str())
    }

    /// The price orders snapshot; `None` before creation.
    pub fn price(&self) -> Option<Money> {
        self.listing.as_ref().map(|listing| listing.price)
    }

    /// Units that can still be reserved.
    pub fn available(&self) -> u64 {
        self.on_hand
    }

    /// Units held by open reservations, not yet sold.
    pub fn reserved(&self) -> u64 {
        self.reserved
    }

    /// Units whose reservations were committed.
    pub fn sold(&self) -> u64 {
        self.sold
    }

    /// The quantity `order_id` holds, if its reservation is still open.
    pub fn reservation(&self, order_id: Uuid) -> Option<u32> {
        self.reservations.get(&order_id).copied()
    }

    fn listing(&self) -> Result<&Listing, DomainError> {
        self.listing.as_ref().ok_or(DomainError::NotFound {
            stream_type: Self::STREAM_TYPE,
        })
    }

    fn held_by(&self, order_id: Uuid) -> Result<u32, DomainError> {
        self.listing()?;
        self.reservation(order_id)
            .ok_or(DomainError::ReservationNotFound { order_id })
    }

    fn close(&mut self, order_id: Uuid, quantity: u32) {
        self.reserved = self.reserved.saturating_sub(quantity.into());
        self.reservations.remove(&order_id);
    }
}

/// The largest price, in minor units: 2^53 - 1, the largest integer every JSON client
/// (JavaScript's numbers included) reads exactly.
pub const MAX_PRICE: i64 = (1 << 53) - 1;

fn ensure_price(price: Money) -> Result<(), DomainError> {
    if price.is_negative() {
        Err(DomainError::PriceNegative { price })
    } else if price.amount_minor > MAX_PRICE {
        Err(DomainError::PriceTooLarge {
            price,
            max: MAX_PRICE,
        })
    } else {
        Ok(())
    }
}

fn ensure_quantity(quantity: u32) -> Result<(), DomainError> {
    if quantity == 0 {
        Err(DomainError::QuantityOutOfRange {
            quantity: 0,
            max: u32::MAX.into(),
        })
    } else {
        Ok(())
    }
}

impl Aggregate for Product {
    const STREAM_TYPE: &'static str = "product";
    type Command = ProductCommand;
    type Event = ProductEvent;

    fn handle(&self, command: ProductCommand) -> Result<Vec<ProductEvent>, DomainError> {
        let event = match command {
            ProductCommand::Create {
                sku,
                name,
                price,
                initial_stock,
            } => {
                if self.exists() {
                    return Err(DomainError::AlreadyExists {
                        stream_type: Self::STREAM_TYPE,
                    });
                }
                ensure_price(price)?;
                ProductEvent::ProductCreated {
                    sku,
                    name,
                    price,
                    initial_stock,
                }
            }
            ProductCommand::ChangePrice { price } => {
                let previous_price = self.listing()?.price;
                price.ensure_currency(previous_price.currency)?;
                ensure_price(price)?;
                if price == previous_price {
                    return Ok(vec![]);
                }
                ProductEvent::PriceChanged {
                    previous_price,
                    price,
                }
            }
            ProductCommand::Restock { quantity } => {
                self.listing()?;
                ensure_quantity(quantity)?;
                ProductEvent::Restocked { quantity }
            }
            ProductCommand::Reserve { order_id, quantity } => {
                self.listing()?;
                ensure_quantity(quantity)?;
                if self.reservations.contains_key(&order_id) {
                    return Err(DomainError::ReservationExists { order_id });
                }
                if u64::from(quantity) > self.on_hand {
                    return Err(DomainError::InsufficientStock {
                        requested: quantity,
                        available: self.on_hand,
                    });
                }
                ProductEvent::StockReserved { order_id, quantity }
            }
            ProductCommand::Release { order_id } => ProductEvent::ReservationReleased {
                order_id,
                quantity: self.held_by(order_id)?,
            },
            ProductCommand::CommitReservation { order_id } => ProductEvent::ReservationCommitted {
                order_id,
                quantity: self.held_by(order_id)?,
            },
        };
        Ok(vec![event])
    }

    fn apply(&mut self, event: &ProductEvent) {
        match event {
            ProductEvent::ProductCreated {
                sku,
                name,
                price,
                initial_stock,
            } => {
                self.listing = Some(Listing {
                    sku: sku.clone(),
                    name: name.clone(),
                    price: *price,
                });
                self.on_hand = (*initial_stock).into();
            }
            ProductEvent::PriceChanged { price, .. } => {
                if let Some(listing) = &mut self.listing {
                    listing.price = *price;
                }
            }
            ProductEvent::Restocked { quantity } => {
                self.on_hand = self.on_hand.saturating_add((*quantity).into());
            }
            ProductEvent::StockReserved { order_id, quantity } => {
                let quantity = *quantity;
                self.on_hand = self.on_hand.saturating_sub(quantity.into());
                self.reserved = self.reserved.saturating_add(quantity.into());
                self.reservations.insert(*order_id, quantity);
            }
            ProductEvent::ReservationReleased { order_id, quantity } => {
                self.close(*order_id, *quantity);
                self.on_hand = self.on_hand.saturating_add((*quantity).into());
            }
            ProductEvent::ReservationCommitted { order_id, quantity } => {
                self.close(*order_id, *quantity);
                self.sold = self.sold.saturating_add((*quantity).into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::testing::{assert_round_trip, given};
    use crate::Currency;
    use crate::DomainEvent;

    const ORDER: Uuid = Uuid::from_u128(1);
    const OTHER_ORDER: Uuid = Uuid::from_u128(2);

    fn eur(amount_minor: i64) -> Money {
        Money::new(amount_minor, Currency::EUR)
    }

    fn sku(input: &str) -> Sku {
        Sku::parse(input).unwrap()
    }

    fn name(input: &str) -> Name {
        Name::parse(input).unwrap()
    }

    fn created(initial_stock: u32) -> ProductEvent {
        ProductEvent::ProductCreated {
            sku: sku("MUG-01"),
            name: name("Coffee mug"),
            price: eur(1299),
            initial_stock,
        }
    }

    /// Parsed as the HTTP layer parses a request body, so invalid input fails before
    /// the aggregate sees it.
    fn create(sku: &str, name: &str, price: Money) -> Result<ProductCommand, DomainError> {
        Ok(ProductCommand::Create {
            sku: Sku::parse(sku)?,
            name: Name::parse(name)?,
            price,
            initial_stock: 10,
        })
    }

    fn reserved(order_id: Uuid, quantity: u32) -> ProductEvent {
        ProductEvent::StockReserved { order_id, quantity }
    }

    fn released(order_id: Uuid, quantity: u32) -> ProductEvent {
        ProductEvent::ReservationReleased { order_id, quantity }
    }

    fn committed(order_id: Uuid, quantity: u32) -> ProductEvent {
        ProductEvent::ReservationCommitted { order_id, quantity }
    }

    #[test]
    fn creating_a_product_normalizes_its_sku_and_name() {
        let product = given::<Product>(vec![])
            .when_parsed(create(" mug-01 ", "  Coffee mug ", eur(1299)))
            .then_expect(vec![created(10)]);
        assert!(product.exists());
        assert_eq!(product.sku(), Some("MUG-01"));
        assert_eq!(product.name(), Some("Coffee mug"));
        assert_eq!(product.price(), Some(eur(1299)));
        assert_eq!(
            (product.available(), product.reserved(), product.sold()),
            (10, 0, 0)
        );
    }

    #[test]
    fn creating_an_existing_product_is_rejected() {
        given::<Product>(vec![created(10)])
            .when_parsed(create("MUG-02", "Mug", eur(1)))
            .then_error("ALREADY_EXISTS");
    }

    #[test]
    fn creating_with_an_invalid_sku_is_rejected() {
        given::<Product>(vec![])
            .when_parsed(create("mug 01", "Coffee mug", eur(1)))
            .then_error("INVALID_SKU");
    }

    #[test]
    fn skus_are_1_to_64_characters_of_letters_digits_dashes_underscores_and_dots() {
        assert_eq!(
            Sku::parse(" ab-c_1.2 ").as_ref().map(Sku::as_str),
            Ok("AB-C_1.2")
        );
        assert_eq!(
            Sku::parse(&"a".repeat(64)).map(String::from),
            Ok("A".repeat(64))
        );
        for input in ["", "   ", "A B", "MUG/01", "MÜG", "mug#1", &"A".repeat(65)] {
            let error = Sku::parse(input).unwrap_err();
            assert_eq!(error.code(), "INVALID_SKU", "{input:?}");
        }
    }

    #[test]
    fn creating_with_a_blank_name_is_rejected() {
        given::<Product>(vec![])
            .when_parsed(create("MUG-01", " ", eur(1)))
            .then_error("INVALID_NAME");
    }

    #[test]
    fn creating_with_a_name_over_200_characters_is_rejected() {
        given::<Product>(vec![])
            .when_parsed(create("MUG-01", &"x".repeat(201), eur(1)))
            .then_error("INVALID_NAME");
    }

    #[test]
    fn creating_with_a_negative_price_is_rejected() {
        given::<Product>(vec![])
            .when_parsed(create("MUG-01", "Coffee mug", eur(-1)))
            .then_error("PRICE_NEGATIVE");
    }

    #[test]
    fn a_product_may_be_free() {
        given::<Product>(vec![])
            .when(ProductCommand::Create {
                sku: sku("FREEBIE"),
                name: name("Sticker"),
                price: eur(0),
                initial_stock: 0,
            })
            .then_expect(vec![ProductEvent::ProductCreated {
                sku: sku("FREEBIE"),
                name: name("Sticker"),
                price: eur(0),
                initial_stock: 0,
            }]);
    }

    #[test]
    fn changing_the_price_records_the_old_and_new_price() {
        let product = given::<Product>(vec![created(10)])
            .when(ProductCommand::ChangePrice { price: eur(999) })
            .then_expect(vec![ProductEvent::PriceChanged {
                previous_price: eur(1299),
                price: eur(999),
            }]);
        assert_eq!(product.price(), Some(eur(999)));
    }

    #[test]
    fn changing_to_the_same_price_records_nothing() {
        given::<Product>(vec![created(10)])
            .when(ProductCommand::ChangePrice { price: eur(1299) })
            .then_expect(vec![]);
    }

    #[test]
    fn changing_the_price_to_another_currency_is_rejected() {
        given::<Product>(vec![created(10)])
            .when(ProductCommand::ChangePrice {
                price: Money::new(1299, Currency::USD),
            })
            .then_error("CURRENCY_MISMATCH");
    }

    #[test]
    fn changing_to_a_negative_price_is_rejected() {
        given::<Product>(vec![created(10)])
            .when(ProductCommand::ChangePrice { price: eur(-5) })
            .then_error("PRICE_NEGATIVE");
    }

    #[test]
    fn changing_the_price_of_a_missing_product_is_not_found() {
        given::<Product>(vec![])
            .when(ProductCommand::ChangePrice { price: eur(5) })
            .then_error("NOT_FOUND");
    }

    #[test]
    fn restocking_adds_to_available_stock() {
        let product = given::<Product>(vec![created(10)])
            .when(ProductCommand::Restock { quantity: 5 })
            .then_expect(vec![ProductEvent::Restocked { quantity: 5 }]);
        assert_eq!(product.available(), 15);
    }

    #[test]
    fn restocking_nothing_is_rejected() {
        given::<Product>(vec![created(10)])
            .when(ProductCommand::Restock { quantity: 0 })
            .then_error("QUANTITY_OUT_OF_RANGE");
    }

    #[test]
    fn restocking_a_missing_product_is_not_found() {
        given::<Product>(vec![])
            .when(ProductCommand::Restock { quantity: 1 })
            .then_error("NOT_FOUND");
    }

    #[test]
    fn reserving_moves_stock_from_available_to_reserved() {
        let product = given::<Product>(vec![created(10)])
            .when(ProductCommand::Reserve {
                order_id: ORDER,
                quantity: 4,
            })
            .then_expect(vec![reserved(ORDER, 4)]);
        assert_eq!((product.available(), product.reserved()), (6, 4));
        assert_eq!(product.reservation(ORDER), Some(4));
    }

    #[test]
    fn reserving_all_available_stock_is_allowed() {
        given::<Product>(vec![created(10), reserved(OTHER_ORDER, 4)])
            .when(ProductCommand::Reserve {
                order_id: ORDER,
                quantity: 6,
            })
            .then_expect(vec![reserved(ORDER, 6)]);
    }

    #[test]
    fn reserving_more_than_available_is_rejected() {
        given::<Product>(vec![created(10), reserved(OTHER_ORDER, 4)])
            .when(ProductCommand::Reserve {
                order_id: ORDER,
                quantity: 7,
            })
            .then_error("INSUFFICIENT_STOCK");
    }

    #[test]
    fn reserving_nothing_is_rejected() {
        given::<Product>(vec![created(10)])
            .when(ProductCommand::Reserve {
                order_id: ORDER,
                quantity: 0,
            })
            .then_error("QUANTITY_OUT_OF_RANGE");
    }

    #[test]
    fn reserving_twice_for_one_order_is_rejected() {
        given::<Product>(vec![created(10), reserved(ORDER, 1)])
            .when(ProductCommand::Reserve {
                order_id: ORDER,
                quantity: 1,
            })
            .then_error("RESERVATION_EXISTS");
    }

    #[test]
    fn a_closed_reservation_is_forgotten_so_the_state_stays_small() {
        let product = given::<Product>(vec![created(10), reserved(ORDER, 1), released(ORDER, 1)])
            .when(ProductCommand::Reserve {
                order_id: ORDER,
                quantity: 2,
            })
            .then_expect(vec![ProductEvent::StockReserved {
                order_id: ORDER,
                quantity: 2,
            }]);
        assert_eq!(product.reservation(ORDER), Some(2));
        let closed = Product::from_events(&[created(10), reserved(ORDER, 1), released(ORDER, 1)]);
        assert_eq!(closed.reservations.len(), 0);
    }

    #[test]
    fn a_product_survives_its_snapshot() {
        let product = Product::from_events(&[created(10), reserved(ORDER, 3)]);
        let snapshot = serde_json::to_value(&product).unwrap();
        let back: Product = serde_json::from_value(snapshot).unwrap();
        assert_eq!(back, product);
        assert_eq!(back.reservation(ORDER), Some(3));
    }

    #[test]
    fn reserving_a_missing_product_is_not_found() {
        given::<Product>(vec![])
            .when(ProductCommand::Reserve {
                order_id: ORDER,
                quantity: 1,
            })
            .then_error("NOT_FOUND");
    }

    #[test]
    fn releasing_returns_the_reserved_stock() {
        let product = given::<Product>(vec![created(10), reserved(ORDER, 4)])
            .when(ProductCommand::Release { order_id: ORDER })
            .then_expect(vec![released(ORDER, 4)]);
        assert_eq!((product.available(), product.reserved()), (10, 0));
        assert_eq!(product.reservation(ORDER), None);
    }

    #[test]
    fn releasing_without_a_reservation_is_rejected() {
        given::<Product>(vec![created(10), reserved(OTHER_ORDER, 4)])
            .when(ProductCommand::Release { order_id: ORDER })
            .then_error("RESERVATION_NOT_FOUND");
    }

    #[test]
    fn releasing_twice_is_rejected() {
        given::<Product>(vec![created(10), reserved(ORDER, 4), released(ORDER, 4)])
            .when(ProductCommand::Release { order_id: ORDER })
            .then_error("RESERVATION_NOT_FOUND");
    }

    #[test]
    fn releasing_a_committed_reservation_is_rejected() {
        given::<Product>(vec![created(10), reserved(ORDER, 4), committed(ORDER, 4)])
            .when(ProductCommand::Release { order_id: ORDER })
            .then_error("RESERVATION_NOT_FOUND");
    }

    #[test]
    fn releasing_on_a_missing_product_is_not_found() {
        given::<Product>(vec![])
            .when(ProductCommand::Release { order_id: ORDER })
            .then_error("NOT_FOUND");
    }

    #[test]
    fn committing_turns_reserved_stock_into_sold_stock() {
        let product = given::<Product>(vec![created(10), reserved(ORDER, 4)])
            .when(ProductCommand::CommitReservation { order_id: ORDER })
            .then_expect(vec![committed(ORDER, 4)]);
        assert_eq!(
            (product.available(), product.reserved(), product.sold()),
            (6, 0, 4)
        );
    }

    #[test]
    fn committing_without_a_reservation_is_rejected() {
        given::<Product>(vec![created(10)])
            .when(ProductCommand::CommitReservation { order_id: ORDER })
            .then_error("RESERVATION_NOT_FOUND");
    }

    #[test]
    fn committing_twice_is_rejected() {
        given::<Product>(vec![created(10), reserved(ORDER, 4), committed(ORDER, 4)])
            .when(ProductCommand::CommitReservation { order_id: ORDER })
            .then_error("RESERVATION_NOT_FOUND");
    }

    #[test]
    fn committing_a_released_reservation_is_rejected() {
        given::<Product>(vec![created(10), reserved(ORDER, 4), released(ORDER, 4)])
            .when(ProductCommand::CommitReservation { order_id: ORDER })
            .then_error("RESERVATION_NOT_FOUND");
    }

    #[test]
    fn committing_on_a_missing_product_is_not_found() {
        given::<Product>(vec![])
            .when(ProductCommand::CommitReservation { order_id: ORDER })
            .then_error("NOT_FOUND");
    }

    #[test]
    fn every_product_event_survives_storage_under_a_stable_name() {
        let events = [
            created(10),
            ProductEvent::PriceChanged {
                previous_price: eur(1299),
                price: eur(999),
            },
            ProductEvent::Restocked { quantity: 3 },
            reserved(ORDER, 2),
            released(ORDER, 2),
            committed(ORDER, 2),
        ];
        let names = [
            "ProductCreated",
            "PriceChanged",
            "Restocked",
            "StockReserved",
            "ReservationReleased",
            "ReservationCommitted",
        ];
        assert_round_trip(&events, &names);
        assert_eq!(ProductEvent::EVENT_TYPES, names);
        assert_eq!(
            created(10).to_payload(),
            json!({
                "sku": "MUG-01",
                "name": "Coffee mug",
                "price": {"amountMinor": 1299, "currency": "EUR"},
                "initialStock": 10,
            })
        );
        assert_eq!(
            reserved(ORDER, 2).to_payload(),
            json!({"orderId": ORDER, "quantity": 2})
        );
    }
}
