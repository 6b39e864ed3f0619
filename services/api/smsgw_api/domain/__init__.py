"""What the gateway decides, free of HTTP: phone numbers, accounts, SIM
routing and limits, webhook events, opt-out keywords. Uses core only."""
