include $(sort $(wildcard $(BR2_EXTERNAL_RPI_STREAMER_PATH)/package/*/*.mk))
