//! Quickstart (interim): classify the failures Bedrock sends.
//!
//! Prints how `tower-bedrock` tells Bedrock's three 429s and two 503s apart.
//! The full quickstart (an emulated multi-app scenario, naive retries vs the
//! stack) replaces this as the stack is assembled.

use tower_bedrock::classify::classify_parts;

fn main() {
    let samples: &[(u16, &str, &str)] = &[
        (429, "ThrottlingException", "Too many requests, please wait before trying again."),
        (429, "ThrottlingException", "Too many tokens, please wait before trying again."),
        (
            429,
            "ThrottlingException",
            "Model anthropic.claude-haiku-4-5-20251001-v1:0 is currently overloaded. Please try again later.",
        ),
        (503, "ServiceUnavailableException", "Too many connections, please wait before trying again."),
        (503, "ServiceUnavailableException", "Service temporarily unavailable, please try again."),
        (400, "ValidationException", "Input is too long for requested model."),
    ];
    println!("{:<6} {:<30} {:<34} class", "status", "code", "message (first words)");
    for (status, code, message) in samples {
        let c = classify_parts(Some(*status), Some(code), Some(message));
        let head: String = message.chars().take(32).collect();
        println!("{status:<6} {code:<30} {head:<34} {}", c.class);
    }
}
