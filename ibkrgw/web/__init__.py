"""Web plumbing shared by every door (REST, websockets, MCP): no domain knowledge lives here.

- `serializers`: strict query and body mixins (an unknown parameter or field is an error) and the
  decimal fields money, prices and quantities are rendered with;
- `fields`: input fields for values that reach the broker (strict alphabets, ASCII digits only);
- `listing`: the one way lists are filtered by time (`since`/`until`) and paged (`limit`/`offset`);
- `mcp`: declaring MCP tools and resources (`@mcp_tool`), without importing the MCP server;
- `ws`: the websocket side: close codes, error frames, JSON framing, per-loop hubs, per-client
  outboxes and the `StreamConsumer` base of every stream;
- `render`: how a Decimal and a datetime look in JSON, the same through every door.
"""
