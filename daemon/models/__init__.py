"""The models: where a name comes from (builtin cache, hub, folder), loading, batched generation
and exporting a merged adapter."""
