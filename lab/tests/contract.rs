//! The saga's contract, checked across the services: every topic of [`Topic`] is consumed by some
//! service, so a topic added to the contract without a consumer fails here (and each service's
//! `consumes!` declaration, which names every topic as consumed or ignored, fails to compile until
//! it decides).

use std::collections::BTreeSet;

use lab::Service;
use saga_shared::events::Topic;

#[test]
fn every_topic_of_the_contract_has_a_consumer() {
    let consumed: BTreeSet<Topic> = Service::ALL
        .iter()
        .flat_map(|s| s.consumes().iter().copied())
        .collect();
    let all: BTreeSet<Topic> = Topic::ALL.into_iter().collect();
    assert_eq!(consumed, all, "topics without a consumer");
}

#[test]
fn every_topic_has_exactly_one_publisher() {
    for topic in Topic::ALL {
        let publishers: Vec<&str> = Service::ALL
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
fn each_service_consumes_something() {
    for service in Service::ALL {
        assert!(
            !service.consumes().is_empty(),
            "{} consumes something",
            service.name()
        );
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
    assert_eq!(order_service::OrderService::source(), "/order-service");
    assert_eq!(
        payment_service::PaymentService::source(),
        "/payment-service"
    );
    assert_eq!(
        inventory_service::InventoryService::source(),
        "/inventory-service"
    );
    assert_eq!(
        notification_service::NotificationService::source(),
        "/notification-service"
    );
    let ports: BTreeSet<u16> = Service::ALL.iter().map(|s| s.default_port()).collect();
    assert_eq!(ports.len(), 4, "each service has its own port");
}
