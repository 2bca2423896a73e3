"""`journeys collect`: the HTTP collector for web SDKs, email and order webhooks."""
