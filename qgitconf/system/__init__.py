"""System files outside /home: the rules, the root step, their persistence (issue 15)."""
