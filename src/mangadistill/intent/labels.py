"""The MangaAssist intent label set. Every probability vector in the project uses this order."""

INTENTS: tuple[str, ...] = (
    "recommendation",
    "product_question",
    "order_tracking",
    "return_request",
    "checkout_help",
    "faq",
    "account_security",
    "escalation",
)
RARE_INTENTS: tuple[str, ...] = ("account_security", "escalation")
INTENT_INDEX: dict[str, int] = {name: i for i, name in enumerate(INTENTS)}
