"""The model a workflow is made of: patterns, recipes, rules, the workflow, events and jobs, the
runner's settings, the workflow file with its schema, and what to notify. Plain data, checked
when made; it imports nothing from the parts that run it."""
