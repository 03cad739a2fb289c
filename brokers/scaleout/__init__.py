"""Several web processes sharing one IB connection: the owner serves the broker port on the channel
layer (`server`), the others call it (`follower`), a database lease elects the owner (`lease`), and
`protocol` is the wire format they share. See `protocol` for the message protocol."""
