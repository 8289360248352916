//! `autoheal run --namespace A` works on namespace A only: a group in another namespace gets
//! no Instance, no status and no write at all from it (audit log), while A's group is served.

mod support;

use std::time::Duration;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_namespace_the_operator_serves_that_namespace_and_touches_no_other() {
    let served = Env::new("ns-served").await;
    let other = Env::new("ns-other").await;
    let _op = served.operator();
    let offset = other.audit_end();
    let group = GroupBuilder::new("web").desired(2).build();
    other.apply_group(&group).await;
    served.apply_group(&group).await;
    served.wait_in_service("web", 2).await;
    served.wait_group_condition("web", "Ready", "True").await;

    // By now the operator has seen both groups in its watches, had it watched both.
    other
        .expect_no_writes(
            offset,
            Duration::from_secs(3),
            "the operator wrote outside its namespace",
            |w| w.user_agent.starts_with("autoheal/"),
        )
        .await;
    assert!(
        other.group_instances("web").await.is_empty(),
        "no Instance in the other namespace"
    );
    assert!(
        other.group("web").await.status.is_none(),
        "no status on the other namespace's group"
    );
}
