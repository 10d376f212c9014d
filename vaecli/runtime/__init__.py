"""The machine: devices, memory budgets, signals."""
