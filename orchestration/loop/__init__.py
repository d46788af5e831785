"""The control loop: snapshot, rules, actions, cycle lease and runner, and the
registries the layers above plug into (snapshot sections, action handlers, tick hooks)."""
