//! `classify_parts` never panics on arbitrary input and is deterministic.

use proptest::prelude::*;
use tower_bedrock_classify::classify_parts;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn never_panics_and_is_deterministic(
        status in proptest::option::of(any::<u16>()),
        code in proptest::option::of(any::<String>()),
        message in proptest::option::of(any::<String>()),
    ) {
        let a = classify_parts(status, code.as_deref(), message.as_deref());
        let b = classify_parts(status, code.as_deref(), message.as_deref());
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a.status, status);
        // Codes kept are bounded and code-like.
        if let Some(code) = a.code() {
            prop_assert!(code.len() <= 64);
            prop_assert!(code.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')));
        }
    }

    #[test]
    fn wire_decorations_do_not_change_the_class(
        status in proptest::option::of(prop_oneof![Just(400u16), Just(429), Just(503), Just(500)]),
        code in prop_oneof![
            Just("ThrottlingException"), Just("ServiceUnavailableException"),
            Just("ValidationException"), Just("ModelTimeoutException"),
            Just("InternalServerException"), Just("ModelNotReadyException"),
        ],
        message in proptest::option::of("[a-zA-Z ,.]{0,80}"),
        suffix in "[a-z:/.]{0,30}",
    ) {
        let plain = classify_parts(status, Some(code), message.as_deref());
        let decorated = format!("com.amazon.bedrock#{code}:{suffix}");
        let wire = classify_parts(status, Some(&decorated), message.as_deref());
        prop_assert_eq!(plain.class, wire.class);
        prop_assert_eq!(plain.code(), wire.code());
    }
}
