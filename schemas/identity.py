"""Identity facts shared by producers and the engine: free-mail domains and email accounts.

An account is a company: the lower-cased domain of a business email. A
free-mail address (gmail.com and the like) says nothing about the company,
so its contact is its own account.
"""

from __future__ import annotations

FREE_MAIL_DOMAINS: frozenset[str] = frozenset(
    {
        "gmail.com",
        "googlemail.com",
        "outlook.com",
        "outlook.nl",
        "hotmail.com",
        "hotmail.nl",
        "live.com",
        "live.nl",
        "msn.com",
        "yahoo.com",
        "yahoo.nl",
        "yahoo.co.uk",
        "ymail.com",
        "icloud.com",
        "me.com",
        "mac.com",
        "aol.com",
        "proton.me",
        "protonmail.com",
        "gmx.com",
        "gmx.net",
        "gmx.de",
        "web.de",
        "mail.com",
        "zoho.com",
        "yandex.com",
        "fastmail.com",
        "hey.com",
        "tutanota.com",
        "ziggo.nl",
        "kpnmail.nl",
        "kpnplanet.nl",
        "planet.nl",
        "home.nl",
        "hetnet.nl",
        "xs4all.nl",
        "chello.nl",
        "casema.nl",
        "telfort.nl",
        "upcmail.nl",
        "online.nl",
        "telenet.be",
        "skynet.be",
        "orange.fr",
        "t-online.de",
    }
)


def email_domain(email: str) -> str:
    """The lower-cased domain of an email address."""
    return email.rpartition("@")[2].lower()


def is_free_mail(email: str) -> bool:
    """Whether an address is at a free-mail provider (its contact is its own account)."""
    return email_domain(email) in FREE_MAIL_DOMAINS


def email_account(email: str) -> str:
    """The account an email address implies: its domain, or itself for free-mail."""
    domain = email_domain(email)
    return email.lower() if domain in FREE_MAIL_DOMAINS else domain
