//! The saga's contract, checked across the services: every topic of [`Topic`] is consumed by some
//! service, so a topic added to the contract without a consumer fails here (and each service's
//! handler, which matches on `Topic` without a catch-all, fails to compile until it decides).

use std::collections::BTreeSet;

use saga_shared::consumer::Handler;
use saga_shared::events::Topic;

fn handlers() -> [(&'static str, Box<dyn Handler>); 4] {
    [
        ("order-service", Box::new(order_service::saga::OrderSaga)),
        (
            "payment-service",
            Box::new(payment_service::saga::PaymentSaga),
        ),
        (
            "inventory-service",
            Box::new(inventory_service::saga::InventorySaga),
        ),
        (
            "notification-service",
            Box::new(notification_service::saga::Notifier),
        ),
    ]
}

#[test]
fn every_topic_of_the_contract_has_a_consumer() {
    let consumed: BTreeSet<Topic> = handlers()
        .iter()
        .flat_map(|(_, h)| h.topics().iter().copied())
        .collect();
    let all: BTreeSet<Topic> = Topic::ALL.into_iter().collect();
    assert_eq!(consumed, all, "topics without a consumer");
}

#[test]
fn every_topic_has_exactly_one_publisher() {
    for topic in Topic::ALL {
        let publishers: Vec<&str> = lab::Service::ALL
            .iter()
            .filter(|s| s.publishes().contains(&topic))
            .map(|s| s.name())
            .collect();
        assert_eq!(
            publishers.len(),
            1,
            "{topic} is published by {publishers:?}"
        );
    }
}

#[test]
fn each_service_declares_each_topic_once() {
    for (service, h) in handlers() {
        let distinct: BTreeSet<Topic> = h.topics().iter().copied().collect();
        assert_eq!(distinct.len(), h.topics().len(), "{service}");
        assert!(!distinct.is_empty(), "{service} consumes something");
    }
}

#[test]
fn topic_names_round_trip_and_are_unique() {
    let names: BTreeSet<&str> = Topic::ALL.iter().map(|t| t.name()).collect();
    assert_eq!(names.len(), Topic::ALL.len());
    for t in Topic::ALL {
        assert_eq!(Topic::parse(t.name()), Some(t));
        assert_eq!(t.dlq(), format!("{}.dlq", t.name()));
    }
    assert_eq!(Topic::parse("order.created.dlq"), None);
}

#[test]
fn each_service_publishes_under_its_own_name() {
    use saga_shared::service::SagaService;
    fn check<S: SagaService>(source: &str) {
        assert_eq!(source, format!("/{}", S::NAME), "ce_source of {}", S::NAME);
    }
    check::<order_service::OrderService>(order_service::SOURCE);
    check::<payment_service::PaymentService>(payment_service::SOURCE);
    check::<inventory_service::InventoryService>(inventory_service::SOURCE);
    check::<notification_service::NotificationService>(notification_service::SOURCE);
    let ports: BTreeSet<u16> = lab::Service::ALL.iter().map(|s| s.default_port()).collect();
    assert_eq!(ports.len(), 4, "each service has its own port");
}
