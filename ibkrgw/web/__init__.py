"""Web plumbing shared by every door (REST, websockets, MCP): no domain knowledge lives here.

- `serializers`: strict query and body mixins (an unknown parameter or field is an error) and the
  decimal fields money, prices and quantities are rendered with;
- `listing`: the one way lists are filtered by time (`since`/`until`) and paged (`limit`/`offset`);
- `mcp`: declaring MCP tools and resources (`@mcp_tool`), without importing the MCP server.
"""
