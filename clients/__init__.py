"""The ClientApp of an institution and what it does with each message of the protocol."""
