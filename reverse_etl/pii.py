"""Keep personal data (emails, phone numbers) out of logs and printed messages.

Error texts from destinations often echo the rejected value ("Email address ana@x.com is
invalid"). Those texts are kept whole in the warehouse (``reverse_etl.sync_row_errors``,
which holds personal data anyway) but pass through ``redact`` before they are logged,
printed or stored as a run's error message.
"""

import re

_EMAIL = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# a phone-like run: optional +, then 7 or more digits, possibly split by spaces, dots,
# dashes or parentheses (ids such as run ids are hex or short and do not match)
_PHONE = re.compile(r"(?<![\w.])\+?\(?\d(?:[\s().-]{0,2}\d){6,}(?![\w.])")


def redact(text: str) -> str:
    """``text`` with email addresses and phone numbers replaced by placeholders."""
    return _PHONE.sub("<phone>", _EMAIL.sub("<email>", text))
