//! The engine's rules as tables: each row is an engine driven through `given` events, then
//! one `when` event, and the exact actions it must return. Client tokens are `t-{n}`.

use super::*;
use crate::ipc::ServiceError;
use serde_json::json;

fn obj(v: Value) -> Section {
    v.as_object().cloned().unwrap_or_else(|| panic!("not an object: {v}"))
}

fn engine(applied: Value) -> ShadowSync {
    ShadowSync::new(SyncConfig::new("t").unwrap(), obj(applied))
}

/// The device as most rows find it: automatic mode at 1500 rpm.
fn device() -> Value {
    json!({"mode": "auto", "speedRpm": 1500})
}

fn doc(version: u64, desired: Value, reported: Value) -> Value {
    json!({"state": {"desired": desired, "reported": reported}, "metadata": {}, "version": version, "timestamp": 1})
}

fn get_accepted(token: &str, document: Value) -> Event {
    Event::GetAccepted { client_token: token.into(), document }
}

fn get_rejected(token: &str, code: u16) -> Event {
    Event::GetRejected { client_token: token.into(), rejection: Rejection::new(code, "m") }
}

fn delta(version: u64, state: Value) -> Event {
    Event::Delta { document: json!({"state": state, "metadata": {}, "version": version, "timestamp": 1}) }
}

fn documents(version: u64, desired: Value, reported: Value) -> Event {
    Event::Documents {
        document: json!({
            "previous": null,
            "current": {"state": {"desired": desired, "reported": reported}, "metadata": {}, "version": version},
            "timestamp": 1,
        }),
    }
}

fn applied(v: Value) -> Event {
    Event::Applied { applied: obj(v), refused: Vec::new() }
}

fn refused(path: &str, value: Value, reason: &str) -> Event {
    Event::Applied { applied: Section::new(), refused: vec![Refusal::new(path, value, reason)] }
}

fn local(v: Value) -> Event {
    Event::LocalChange { state: obj(v) }
}

fn accepted(token: &str, version: u64) -> Event {
    Event::UpdateAccepted { document: json!({"state": {}, "metadata": {}, "version": version, "clientToken": token}) }
}

fn rejected(token: &str, code: u16) -> Event {
    Event::UpdateRejected { client_token: token.into(), rejection: Rejection::new(code, "m") }
}

fn get(token: &str) -> Action {
    Action::GetShadow { client_token: token.into() }
}

fn apply(changes: Value) -> Action {
    Action::Apply { changes: obj(changes) }
}

fn update(token: &str, reported: Value, version: Option<u64>) -> Action {
    let mut payload = json!({"state": {"reported": reported}, "clientToken": token});
    if let Some(v) = version {
        payload["version"] = v.into();
    }
    Action::UpdateShadow { client_token: token.into(), payload }
}

fn retry(secs: u64) -> Action {
    Action::RetryAfter(Duration::from_secs(secs))
}

fn problem(p: Problem) -> Action {
    Action::Problem(p)
}

/// Started and in sync at version 3: desired speed 1500, reported as applied.
fn synced() -> Vec<Event> {
    vec![Event::Start, get_accepted("t-1", doc(3, json!({"speedRpm": 1500}), device()))]
}

/// Synced, then desired 9000 rpm at version 4, refused; the refusal (t-2, version 4) is
/// in flight.
fn refusal_in_flight() -> Vec<Event> {
    let mut events = synced();
    events.push(delta(4, json!({"speedRpm": 9000})));
    events.push(refused("speedRpm", json!(9000), "above limits.maxRpm 3000"));
    events
}

/// The refusal above, accepted as version 5.
fn refusal_reported() -> Vec<Event> {
    let mut events = refusal_in_flight();
    events.push(accepted("t-2", 5));
    events
}

/// Synced, then a local change to 1000 rpm whose report (t-2) is in flight.
fn report_in_flight() -> Vec<Event> {
    let mut events = synced();
    events.push(local(json!({"speedRpm": 1000})));
    events
}

fn refusal_9000() -> Value {
    json!({"speedRpm": {"value": 9000, "reason": "above limits.maxRpm 3000"}})
}

struct Row {
    name: &'static str,
    device: Value,
    given: Vec<Event>,
    when: Event,
    then: Vec<Action>,
}

fn row(name: &'static str, given: Vec<Event>, when: Event, then: Vec<Action>) -> Row {
    Row { name, device: device(), given, when, then }
}

fn check(rows: Vec<Row>) {
    let mut failures = Vec::new();
    for row in rows {
        let mut sync = engine(row.device);
        for event in row.given {
            sync.handle(event);
        }
        let got = sync.handle(row.when);
        if got != row.then {
            failures.push(format!("{}:\n  expected {:?}\n  got      {:?}", row.name, row.then, got));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn start_and_reconciliation_rules() {
    check(vec![
        row("start_requests_the_document", vec![], Event::Start, vec![get("t-1")]),
        Row {
            name: "start_asks_to_apply_every_desired_value_the_device_does_not_run",
            device: json!({"mode": "auto", "speedRpm": 0}),
            given: vec![Event::Start],
            when: get_accepted(
                "t-1",
                doc(3, json!({"mode": "auto", "speedRpm": 1500}), json!({"mode": "auto", "speedRpm": 0})),
            ),
            then: vec![apply(json!({"speedRpm": 1500}))],
        },
        Row {
            name: "start_reports_the_device_state_not_the_stale_reported_state",
            device: json!({"speedRpm": 0, "running": false}),
            given: vec![Event::Start],
            when: get_accepted("t-1", doc(3, json!({}), json!({"speedRpm": 1500, "running": true}))),
            then: vec![update("t-2", json!({"speedRpm": 0, "running": false}), None)],
        },
        Row {
            name: "start_holds_the_report_until_the_apply_is_answered",
            device: json!({"speedRpm": 0}),
            given: vec![Event::Start],
            when: get_accepted("t-1", doc(3, json!({"speedRpm": 1500}), json!({"speedRpm": 1200}))),
            then: vec![apply(json!({"speedRpm": 1500}))],
        },
        Row {
            name: "start_reports_what_the_caller_applied",
            device: json!({"speedRpm": 0}),
            given: vec![
                Event::Start,
                get_accepted("t-1", doc(3, json!({"speedRpm": 1500}), json!({"speedRpm": 1200}))),
            ],
            when: applied(json!({"speedRpm": 1500})),
            then: vec![update("t-2", json!({"speedRpm": 1500}), None)],
        },
        row(
            "start_in_sync_sends_nothing",
            vec![Event::Start],
            get_accepted("t-1", doc(3, json!({"speedRpm": 1500}), device())),
            vec![],
        ),
        row(
            "no_shadow_yet_reports_the_device_state_which_creates_it",
            vec![Event::Start],
            get_rejected("t-1", 404),
            vec![update("t-2", device(), None)],
        ),
        row(
            "start_withdraws_refusals_left_in_reported_by_an_earlier_run",
            vec![Event::Start],
            get_accepted(
                "t-1",
                doc(3, json!({"speedRpm": 1500}), json!({"mode": "auto", "speedRpm": 1500, "refused": refusal_9000()})),
            ),
            vec![update("t-2", json!({"refused": null}), Some(3))],
        ),
        row(
            "deltas_during_the_get_are_replayed_when_newer_than_the_document",
            vec![Event::Start, delta(6, json!({"speedRpm": 1800}))],
            get_accepted("t-1", doc(5, json!({"speedRpm": 1500}), device())),
            vec![apply(json!({"speedRpm": 1800}))],
        ),
        row(
            "deltas_during_the_get_not_newer_than_the_document_are_dropped",
            vec![Event::Start, delta(4, json!({"speedRpm": 900}))],
            get_accepted("t-1", doc(5, json!({"speedRpm": 1500}), device())),
            vec![],
        ),
        row(
            "a_get_answer_with_a_foreign_token_is_ignored",
            vec![Event::Start],
            get_accepted("other-1", doc(3, json!({"speedRpm": 9}), json!({}))),
            vec![],
        ),
        row(
            "a_get_answer_without_a_version_is_reported_and_the_get_retried_later",
            vec![Event::Start],
            get_accepted("t-1", json!({"state": {}})),
            vec![problem(Problem::Malformed { event: "get answer", detail: "no numeric version".into() }), retry(1)],
        ),
        row("a_throttled_get_backs_off", vec![Event::Start], get_rejected("t-1", 429), vec![retry(1)]),
        row(
            "a_get_is_retried_when_the_pause_is_over",
            vec![Event::Start, get_rejected("t-1", 500)],
            Event::RetryDue,
            vec![get("t-2")],
        ),
        row(
            "a_forbidden_get_is_reported_and_not_retried",
            vec![Event::Start],
            get_rejected("t-1", 403),
            vec![problem(Problem::GetRejected(Rejection::new(403, "m")))],
        ),
        row(
            "after_a_forbidden_get_nothing_is_sent",
            vec![Event::Start, get_rejected("t-1", 403)],
            local(json!({"speedRpm": 10})),
            vec![],
        ),
    ]);
}

#[test]
fn delta_rules() {
    check(vec![
        row(
            "delta_asks_to_apply_the_new_desired_value",
            synced(),
            delta(4, json!({"speedRpm": 1800})),
            vec![apply(json!({"speedRpm": 1800}))],
        ),
        row(
            "delta_is_reported_as_applied_once_the_caller_applied_it",
            [synced(), vec![delta(4, json!({"speedRpm": 1800}))]].concat(),
            applied(json!({"speedRpm": 1800})),
            vec![update("t-2", json!({"speedRpm": 1800}), None)],
        ),
        row(
            "delta_reports_the_value_the_caller_applied_not_the_desired_one",
            [synced(), vec![delta(4, json!({"speedRpm": 1800}))]].concat(),
            applied(json!({"speedRpm": 1790})),
            vec![update("t-2", json!({"speedRpm": 1790}), None)],
        ),
        row(
            "duplicate_delta_is_ignored",
            [synced(), vec![delta(4, json!({"speedRpm": 1800}))]].concat(),
            delta(4, json!({"speedRpm": 1800})),
            vec![],
        ),
        row(
            "redelivered_delta_does_not_undo_a_later_local_change",
            [
                synced(),
                vec![
                    delta(4, json!({"speedRpm": 1800})),
                    applied(json!({"speedRpm": 1800})),
                    local(json!({"speedRpm": 1000})),
                ],
            ]
            .concat(),
            delta(4, json!({"speedRpm": 1800})),
            vec![],
        ),
        row(
            "delta_older_than_the_last_handled_is_ignored",
            [synced(), vec![delta(5, json!({"speedRpm": 1800}))]].concat(),
            delta(4, json!({"speedRpm": 1200})),
            vec![],
        ),
        row("delta_not_newer_than_the_document_is_ignored", synced(), delta(3, json!({"speedRpm": 1200})), vec![]),
        row(
            "delta_keeps_nested_paths",
            synced(),
            delta(4, json!({"limits": {"maxRpm": 2800}})),
            vec![apply(json!({"limits": {"maxRpm": 2800}}))],
        ),
        row(
            "delta_for_a_value_already_asked_for_does_not_ask_again",
            [synced(), vec![delta(4, json!({"speedRpm": 1800}))]].concat(),
            delta(5, json!({"speedRpm": 1800, "mode": "manual"})),
            vec![apply(json!({"mode": "manual"}))],
        ),
        row(
            "delta_without_a_version_is_reported_and_ignored",
            synced(),
            Event::Delta { document: json!({"state": {"speedRpm": 1}}) },
            vec![problem(Problem::Malformed {
                event: "delta",
                detail: "needs a numeric version and a state object".into(),
            })],
        ),
        row(
            "delta_with_a_non_object_state_is_reported_and_ignored",
            synced(),
            Event::Delta { document: json!({"state": 5, "version": 9}) },
            vec![problem(Problem::Malformed {
                event: "delta",
                detail: "needs a numeric version and a state object".into(),
            })],
        ),
        row("delta_before_start_is_ignored", vec![], delta(4, json!({"speedRpm": 1800})), vec![]),
    ]);
}

#[test]
fn refusal_rules() {
    check(vec![
        row(
            "refused_value_is_reported_with_its_reason_and_the_version_it_answers",
            [synced(), vec![delta(4, json!({"speedRpm": 9000}))]].concat(),
            refused("speedRpm", json!(9000), "above limits.maxRpm 3000"),
            vec![update("t-2", json!({"refused": refusal_9000()}), Some(4))],
        ),
        row(
            "refusal_does_not_change_the_reported_value",
            [synced(), vec![delta(4, json!({"speedRpm": 9000, "mode": "manual"}))]].concat(),
            Event::Applied {
                applied: obj(json!({"mode": "manual"})),
                refused: vec![Refusal::new("speedRpm", json!(9000), "above limits.maxRpm 3000")],
            },
            vec![update("t-2", json!({"mode": "manual", "refused": refusal_9000()}), Some(4))],
        ),
        row(
            "refused_value_is_not_asked_again_by_the_delta_its_report_causes",
            refusal_reported(),
            delta(5, json!({"speedRpm": 9000})),
            vec![],
        ),
        row(
            "new_desired_value_after_a_refusal_is_asked_for",
            refusal_reported(),
            delta(6, json!({"speedRpm": 1200})),
            vec![apply(json!({"speedRpm": 1200}))],
        ),
        row(
            "valid_desired_value_clears_the_refusal",
            [refusal_reported(), vec![delta(6, json!({"speedRpm": 1200}))]].concat(),
            applied(json!({"speedRpm": 1200})),
            vec![update("t-3", json!({"speedRpm": 1200, "refused": null}), Some(6))],
        ),
        row(
            "desired_set_back_to_the_running_value_clears_the_refusal",
            refusal_reported(),
            documents(6, json!({"speedRpm": 1500}), json!({"speedRpm": 1500})),
            vec![update("t-3", json!({"refused": null}), Some(6))],
        ),
        row(
            "documents_message_not_newer_than_the_last_delta_is_ignored",
            [synced(), vec![delta(6, json!({"speedRpm": 1800}))]].concat(),
            documents(5, json!({"speedRpm": 1200}), json!({})),
            vec![],
        ),
        row(
            "refusal_of_a_value_no_longer_desired_is_not_reported",
            [
                synced(),
                vec![
                    delta(4, json!({"speedRpm": 9000})),
                    delta(5, json!({"speedRpm": 1200})),
                    refused("speedRpm", json!(9000), "above limits.maxRpm 3000"),
                ],
            ]
            .concat(),
            applied(json!({"speedRpm": 1200})),
            vec![update("t-2", json!({"speedRpm": 1200}), None)],
        ),
        row(
            "nested_refusal_is_reported_under_its_dotted_path",
            [synced(), vec![delta(4, json!({"limits": {"maxRpm": -1}}))]].concat(),
            refused("limits.maxRpm", json!(-1), "must be positive"),
            vec![update(
                "t-2",
                json!({"refused": {"limits.maxRpm": {"value": -1, "reason": "must be positive"}}}),
                Some(4),
            )],
        ),
        row(
            "reconcile_asks_again_for_refused_values",
            refusal_reported(),
            Event::Reconcile,
            vec![apply(json!({"speedRpm": 9000}))],
        ),
    ]);
}

#[test]
fn update_and_version_rules() {
    check(vec![
        row(
            "local_change_is_reported_without_a_version",
            synced(),
            local(json!({"protection": {"active": true, "reason": "bearing", "since": 1700}})),
            vec![update("t-2", json!({"protection": {"active": true, "reason": "bearing", "since": 1700}}), None)],
        ),
        row("local_change_to_the_reported_value_sends_nothing", synced(), local(json!({"speedRpm": 1500})), vec![]),
        row("reports_wait_while_one_is_in_flight", report_in_flight(), local(json!({"speedRpm": 900})), vec![]),
        row(
            "next_report_carries_the_merged_latest_state",
            [report_in_flight(), vec![local(json!({"speedRpm": 900})), local(json!({"protection": {"active": true}}))]]
                .concat(),
            accepted("t-2", 4),
            vec![update("t-3", json!({"speedRpm": 900, "protection": {"active": true}}), None)],
        ),
        row("accepted_report_with_nothing_new_sends_nothing", report_in_flight(), accepted("t-2", 4), vec![]),
        row(
            "accepted_answer_to_another_request_is_ignored",
            [report_in_flight(), vec![local(json!({"speedRpm": 900}))]].concat(),
            accepted("someone-else-7", 4),
            vec![],
        ),
        row("rejection_of_another_request_is_ignored", report_in_flight(), rejected("someone-else-7", 409), vec![]),
        row(
            "duplicate_accepted_answer_is_ignored",
            [report_in_flight(), vec![accepted("t-2", 4), local(json!({"speedRpm": 900}))]].concat(),
            accepted("t-2", 4),
            vec![],
        ),
        row("version_conflict_rereads_the_document", refusal_in_flight(), rejected("t-2", 409), vec![get("t-3")]),
        row(
            "after_a_conflict_the_reread_document_is_reconciled",
            [refusal_in_flight(), vec![rejected("t-2", 409)]].concat(),
            get_accepted("t-3", doc(6, json!({"speedRpm": 1200}), device())),
            vec![apply(json!({"speedRpm": 1200}))],
        ),
        row(
            "conditional_update_carries_the_newest_version_seen",
            [refusal_reported(), vec![delta(6, json!({"speedRpm": 9500}))]].concat(),
            refused("speedRpm", json!(9500), "above limits.maxRpm 3000"),
            vec![update(
                "t-3",
                json!({"refused": {"speedRpm": {"value": 9500, "reason": "above limits.maxRpm 3000"}}}),
                Some(6),
            )],
        ),
        row("throttled_update_backs_off", report_in_flight(), rejected("t-2", 429), vec![retry(1)]),
        row("failed_update_backs_off", report_in_flight(), rejected("t-2", 500), vec![retry(1)]),
        row(
            "second_failure_doubles_the_pause",
            [report_in_flight(), vec![rejected("t-2", 429), Event::RetryDue]].concat(),
            rejected("t-3", 503),
            vec![retry(2)],
        ),
        row(
            "no_report_is_sent_during_the_pause",
            [report_in_flight(), vec![rejected("t-2", 429)]].concat(),
            local(json!({"speedRpm": 800})),
            vec![],
        ),
        row(
            "after_the_pause_the_latest_state_is_sent",
            [report_in_flight(), vec![rejected("t-2", 429), local(json!({"speedRpm": 800}))]].concat(),
            Event::RetryDue,
            vec![update("t-3", json!({"speedRpm": 800}), None)],
        ),
        row("a_stray_retry_due_is_ignored", synced(), Event::RetryDue, vec![]),
        row(
            "bad_request_is_reported",
            report_in_flight(),
            rejected("t-2", 400),
            vec![problem(Problem::UpdateRejected(Rejection::new(400, "m")))],
        ),
        row(
            "too_large_update_is_not_resent_unchanged",
            [report_in_flight(), vec![rejected("t-2", 413)]].concat(),
            local(json!({"speedRpm": 1000})),
            vec![],
        ),
        row(
            "after_a_refused_update_a_new_change_is_sent_with_the_rest",
            [report_in_flight(), vec![rejected("t-2", 413)]].concat(),
            local(json!({"running": true})),
            vec![update("t-3", json!({"speedRpm": 1000, "running": true}), None)],
        ),
    ]);
}

#[test]
fn connection_rules() {
    check(vec![
        row(
            "offline_changes_are_kept_not_sent",
            [report_in_flight(), vec![Event::Disconnected]].concat(),
            local(json!({"speedRpm": 800})),
            vec![],
        ),
        row(
            "an_answer_after_the_disconnect_is_ignored",
            [report_in_flight(), vec![Event::Disconnected]].concat(),
            accepted("t-2", 4),
            vec![],
        ),
        row(
            "offline_the_device_still_acts_on_known_desired_values",
            [refusal_reported(), vec![Event::Disconnected]].concat(),
            Event::Reconcile,
            vec![apply(json!({"speedRpm": 9000}))],
        ),
        row(
            "reconnect_rereads_the_document",
            [report_in_flight(), vec![Event::Disconnected, local(json!({"speedRpm": 800}))]].concat(),
            Event::Reconnected,
            vec![get("t-3")],
        ),
        row(
            "after_reconnect_the_offline_state_is_reported",
            [synced(), vec![Event::Disconnected, local(json!({"running": false})), Event::Reconnected]].concat(),
            get_accepted("t-2", doc(4, json!({"speedRpm": 1500}), device())),
            vec![update("t-3", json!({"running": false}), None)],
        ),
        row(
            "after_reconnect_desired_changed_offline_is_applied",
            [synced(), vec![Event::Disconnected, Event::Reconnected]].concat(),
            get_accepted("t-2", doc(9, json!({"speedRpm": 2000, "mode": "manual"}), device())),
            vec![apply(json!({"speedRpm": 2000, "mode": "manual"}))],
        ),
    ]);
}

#[test]
fn pauses_grow_to_the_configured_limit() {
    let config = SyncConfig { max_backoff: Duration::from_secs(5), ..SyncConfig::new("t").unwrap() };
    let mut sync = ShadowSync::new(config, obj(device()));
    sync.handle(Event::Start);
    let mut pauses = Vec::new();
    for n in 1..=5 {
        let token = format!("t-{n}");
        let actions = sync.handle(get_rejected(&token, 429));
        pauses.push(actions);
        sync.handle(Event::RetryDue);
    }
    let secs = |s| vec![retry(s)];
    assert_eq!(pauses, vec![secs(1), secs(2), secs(4), secs(5), secs(5)]);
    // A success resets the pause.
    sync.handle(get_accepted("t-6", doc(1, json!({}), device())));
    sync.handle(local(json!({"speedRpm": 1})));
    assert_eq!(sync.handle(rejected("t-7", 429)), vec![retry(1)]);
}

#[test]
fn engine_converges_after_a_report_is_accepted() {
    let mut sync = engine(device());
    sync.handle(Event::Start);
    sync.handle(get_accepted("t-1", doc(3, json!({"speedRpm": 1800}), device())));
    assert!(!sync.is_synced(), "an apply is pending");
    sync.handle(applied(json!({"speedRpm": 1800})));
    assert!(!sync.is_synced(), "the report is in flight");
    sync.handle(accepted("t-2", 4));
    assert!(sync.is_synced());
    assert_eq!(sync.version(), 4);
    assert_eq!(sync.applied(), &obj(json!({"mode": "auto", "speedRpm": 1800})));
    assert_eq!(sync.desired(), &obj(json!({"speedRpm": 1800})));
    assert_eq!(sync.refusals().count(), 0);
}

#[test]
fn token_prefix_must_leave_room_for_the_counter() {
    assert!(SyncConfig::new("a".repeat(43)).is_ok());
    assert_eq!(
        SyncConfig::new("a".repeat(44)),
        Err(ConfigError::TokenPrefixTooLong { prefix: "a".repeat(44), max: 43 })
    );
    let longest = format!("{}-{}", "a".repeat(43), u64::MAX);
    assert!(longest.len() <= MAX_CLIENT_TOKEN_BYTES);
    let empty_key = SyncConfig { refused_key: String::new(), ..SyncConfig::new("t").unwrap() };
    assert_eq!(empty_key.validated(), Err(ConfigError::EmptyRefusedKey));
}

#[test]
fn ipc_errors_map_to_shadow_status_codes() {
    let service = |code: ErrorCode, message: &str| IpcError::Service {
        operation: "aws.greengrass#UpdateThingShadow",
        error: Box::new(ServiceError { code, message: message.into(), fields: Map::new() }),
    };
    let cases = [
        (service(ErrorCode::ConflictError, "Version conflict"), 409, RejectionKind::Conflict),
        (service(ErrorCode::ResourceNotFoundError, "No shadow found"), 404, RejectionKind::NotFound),
        (service(ErrorCode::InvalidArgumentsError, "Invalid JSON"), 400, RejectionKind::GiveUp),
        (
            service(ErrorCode::InvalidArgumentsError, "The payload exceeds the maximum size allowed"),
            413,
            RejectionKind::GiveUp,
        ),
        (service(ErrorCode::ServiceError, "Too Many Requests"), 429, RejectionKind::Retry),
        (service(ErrorCode::ServiceError, "Internal service failure"), 500, RejectionKind::Retry),
        (service(ErrorCode::UnauthorizedError, "no"), 403, RejectionKind::GiveUp),
        (IpcError::ConnectionClosed { reason: "eof".into() }, 503, RejectionKind::Retry),
        (IpcError::Refused, 400, RejectionKind::GiveUp),
    ];
    for (error, code, kind) in cases {
        let rejection = Rejection::from_ipc(&error);
        assert_eq!((rejection.code, rejection.kind()), (code, kind), "{error}");
    }
}

#[test]
fn rejected_bodies_are_read_with_their_token() {
    let body = json!({"code": 409, "message": "Version conflict", "timestamp": 1, "clientToken": "t-4"});
    assert_eq!(
        Rejection::from_rejected_body(&body),
        Some((Some("t-4".into()), Rejection::new(409, "Version conflict")))
    );
    assert_eq!(Rejection::from_rejected_body(&json!({"message": "no code"})), None);
}
