"""What analysts and account managers read: the journey map, one account's timeline, SQL.

`source` finds a way to read the pipeline's database (directly, or through the
read endpoint of the sink that holds the embedded engine); `data` gathers the
journey map's figures; `html` renders them into one self-contained page;
`account` gathers one account's timeline.
"""
