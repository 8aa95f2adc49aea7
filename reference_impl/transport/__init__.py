"""Transport adapters around the components: HTTP RPC between services, broker event buses.

The domain and the services stay the same in every deployment; only these adapters differ.
"""
