"""The bot: commands reps send to the scrm app (记, 提醒, 查, 帮助) and the passive replies
that answer them inside WeCom's 5 s."""
