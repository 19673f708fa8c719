"""``eventwire ui``: a local web console for the live topology, lag over time, decoded events and dead letters.

Everything it serves ships in this package (``static/``): no script, font or style is fetched from elsewhere.
"""
